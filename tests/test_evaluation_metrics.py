"""Clustering metrics and sample distances against independent references (hand cases, brute force, closed forms)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from wae.errors import WAEError
from wae.evaluation import (
    active_components,
    ari,
    class_cluster_matrix,
    clustering_metrics,
    contingency,
    exact_w2,
    fid_from_features,
    frechet_distance,
    hungarian_accuracy,
    kid,
    majority_accuracy,
    makhzani_accuracy,
    nmi,
    paper_accuracy,
    pairwise_sq_dists,
    precision_recall,
)


def one_hot(idx, K):
    out = np.zeros((len(idx), K))
    out[np.arange(len(idx)), idx] = 1.0
    return out


# ============================================================================================ clustering: hand cases
def test_paper_greedy_differs_from_hungarian_and_spare_k_counts_wrong():
    # class 0: 12 points in k0, 8 in k1; class 1: 11 in k0, 5 in k1, 4 in k2 (K = 3 > C = 2).
    assign = np.array([0] * 12 + [1] * 8 + [0] * 11 + [1] * 5 + [2] * 4)
    labels = np.array([0] * 20 + [1] * 20)
    probs = one_hot(assign, 3)
    np.testing.assert_allclose(class_cluster_matrix(probs, labels), [[0.6, 0.4, 0.0], [0.55, 0.25, 0.2]])
    # Greedy: class 0 (max 0.6) takes k0, class 1 takes its best unused k: k1 (0.25 > 0.2). k2 is spare.
    acc, mapping = paper_accuracy(probs, labels)
    assert mapping.tolist() == [0, 1, -1]
    assert acc == pytest.approx((12 + 5) / 40)  # the 4 points in spare k2 are wrong
    # Optimal one-to-one matching: class 0 -> k1 (8), class 1 -> k0 (11) = 19 > 17.
    hacc, hmap = hungarian_accuracy(assign, labels, num_clusters=3)
    assert hmap.tolist() == [1, 0, -1]
    assert hacc == pytest.approx(19 / 40)
    # Many-to-one: k0 -> 0 (12 vs 11), k1 -> 0 (8 vs 5), k2 -> 1.
    macc, mmap = majority_accuracy(assign, labels)
    assert mmap.tolist() == [0, 0, 1]
    assert macc == pytest.approx((12 + 8 + 4) / 40)


def test_paper_soft_assignments_spare_components():
    probs = np.array(
        [
            [0.7, 0.1, 0.1, 0.1],  # class 0, argmax k0
            [0.3, 0.5, 0.1, 0.1],  # class 0, argmax k1
            [0.1, 0.6, 0.2, 0.1],  # class 1, argmax k1
            [0.1, 0.1, 0.1, 0.7],  # class 1, argmax k3
        ]
    )
    labels = np.array([0, 0, 1, 1])
    # M = [[0.5, 0.3, 0.1, 0.1], [0.1, 0.35, 0.15, 0.4]]: class 0 -> k0, class 1 -> k3; k1, k2 spare.
    acc, mapping = paper_accuracy(probs, labels)
    assert mapping.tolist() == [0, -1, -1, 1]
    assert acc == pytest.approx(0.5)  # points 2 and 3 have argmax k1 (spare): wrong
    # Makhzani: k0 <- point 0 (0.7, label 0); k1 <- point 2 (0.6, label 1); k2 <- point 2 (0.2, label 1);
    # k3 <- point 3 (0.7, label 1). Clusters share label 1.
    macc, mmap = makhzani_accuracy(probs, labels)
    assert mmap.tolist() == [0, 1, 1, 1]
    assert macc == pytest.approx(0.75)  # only point 1 (k1 -> 1, true 0) is wrong


def test_paper_class_order_vs_global_greedy():
    # One point per class, rows = M. Class order by max: A (0.9), B (0.8), C (0.75).
    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.0, 0.75, 0.25]])
    labels = np.array([0, 1, 2])
    # class_order: A -> k0, then B takes its best unused k1 (0.2), C gets k2.
    acc, mapping = paper_accuracy(probs, labels)
    assert mapping.tolist() == [0, 1, 2]
    assert acc == pytest.approx(1 / 3)  # B's argmax k0 -> 0 wrong; C's argmax k1 -> 1 wrong
    # global: A -> k0 (0.9), then the largest remaining pair is (C, k1) = 0.75, then B -> k2.
    gacc, gmap = paper_accuracy(probs, labels, variant="global")
    assert gmap.tolist() == [0, 2, 1]
    assert gacc == pytest.approx(2 / 3)
    with pytest.raises(WAEError):
        paper_accuracy(probs, labels, variant="nope")


def test_paper_fewer_components_than_classes():
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.4]])
    labels = np.array([0, 1, 2])
    acc, mapping = paper_accuracy(probs, labels)  # classes 0 and 1 (max 1.0) take k0, k1; class 2 none
    assert mapping.tolist() == [0, 1]
    assert acc == pytest.approx(2 / 3)


def test_paper_ignores_absent_classes_and_accepts_torch():
    probs = np.array([[0.2, 0.8], [0.9, 0.1]])
    labels = np.array([2, 0])  # class 1 absent: its zero row must not take a component
    acc, mapping = paper_accuracy(torch.tensor(probs), torch.tensor(labels))
    assert mapping.tolist() == [0, 2]
    assert acc == 1.0
    np.testing.assert_allclose(class_cluster_matrix(probs, labels), [[0.9, 0.1], [0.0, 0.0], [0.2, 0.8]])


def test_majority_hand_case_and_empty_cluster():
    assign = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    labels = np.array([1, 1, 0, 0, 0, 2, 2, 1, 2])
    acc, mapping = majority_accuracy(assign, labels, num_clusters=4)
    assert mapping.tolist() == [1, 0, 2, -1]
    assert acc == pytest.approx(7 / 9)


def test_contingency_and_class_cluster_matrix_against_loops():
    rng = np.random.default_rng(3)
    n, K, C = 50, 5, 3
    assign = rng.integers(0, K, n)
    labels = rng.integers(0, C, n)
    N = contingency(assign, labels, K, C)
    assert N.shape == (C, K)
    for c in range(C):
        for k in range(K):
            assert N[c, k] == sum(1 for i in range(n) if labels[i] == c and assign[i] == k)
    probs = rng.dirichlet(np.ones(K), n)
    M = class_cluster_matrix(probs, labels, C)
    for c in range(C):
        rows = [probs[i] for i in range(n) if labels[i] == c]
        np.testing.assert_allclose(M[c], np.sum(rows, axis=0) / len(rows))


# ====================================================================================== clustering: brute force
def brute_force_one_to_one(assign, labels, K, C):
    """Best accuracy over all injective class -> cluster maps (or cluster -> class if K < C)."""
    n = len(labels)
    N = np.zeros((C, K), dtype=int)
    for a, l in zip(assign, labels):
        N[l, a] += 1
    best = 0
    if K >= C:
        for ks in itertools.permutations(range(K), C):
            best = max(best, sum(N[c, ks[c]] for c in range(C)))
    else:
        for cs in itertools.permutations(range(C), K):
            best = max(best, sum(N[cs[k], k] for k in range(K)))
    return best / n


@pytest.mark.parametrize("K,C,seed", [(4, 4, 0), (4, 4, 1), (4, 4, 2), (5, 3, 3), (3, 5, 4)])
def test_hungarian_against_brute_force(K, C, seed):
    rng = np.random.default_rng(seed)
    n = 40
    labels = rng.integers(0, C, n)
    # correlated with the labels so the optimum is not trivial
    assign = np.where(rng.random(n) < 0.5, labels % K, rng.integers(0, K, n))
    acc, mapping = hungarian_accuracy(assign, labels, num_clusters=K)
    assert acc == pytest.approx(brute_force_one_to_one(assign, labels, K, C))
    used = mapping[mapping >= 0]
    assert len(set(used.tolist())) == len(used) == min(K, C)  # one-to-one
    # the mapping reproduces the accuracy
    assert acc == pytest.approx(np.mean(mapping[assign] == labels))


def test_accuracy_orderings_random():
    # Any one-to-one map is beaten by the optimal one; any many-to-one map by the majority map.
    for seed in range(20):
        rng = np.random.default_rng(seed)
        K, C, n = int(rng.integers(2, 7)), int(rng.integers(2, 6)), 60
        labels = rng.integers(0, C, n)
        probs = rng.dirichlet(np.full(K, 0.3), n)
        a = probs.argmax(1)
        p_acc = paper_accuracy(probs, labels)[0]
        g_acc = paper_accuracy(probs, labels, variant="global")[0]
        m_acc = makhzani_accuracy(probs, labels)[0]
        h_acc = hungarian_accuracy(a, labels, K)[0]
        maj = majority_accuracy(a, labels, K)[0]
        assert p_acc <= h_acc + 1e-12 and g_acc <= h_acc + 1e-12
        assert h_acc <= maj + 1e-12 and m_acc <= maj + 1e-12
        assert h_acc == pytest.approx(brute_force_one_to_one(a, labels, K, C))


def nmi_reference(u, v):
    n = len(u)
    cu, cv, cuv = {}, {}, {}
    for a, b in zip(u, v):
        cu[a] = cu.get(a, 0) + 1
        cv[b] = cv.get(b, 0) + 1
        cuv[(a, b)] = cuv.get((a, b), 0) + 1
    hu = -sum(c / n * math.log(c / n) for c in cu.values())
    hv = -sum(c / n * math.log(c / n) for c in cv.values())
    mi = sum(c / n * math.log((c / n) / ((cu[a] / n) * (cv[b] / n))) for (a, b), c in cuv.items())
    if hu == 0 and hv == 0:
        return 1.0
    return mi / ((hu + hv) / 2)


def ari_reference(u, v):
    """ARI from the pair-confusion counts (Hubert & Arabie), by a loop over all pairs."""
    tp = fp = fn = tn = 0
    n = len(u)
    for i in range(n):
        for j in range(i + 1, n):
            same_u, same_v = u[i] == u[j], v[i] == v[j]
            if same_u and same_v:
                tp += 1
            elif same_u:
                fn += 1
            elif same_v:
                fp += 1
            else:
                tn += 1
    den = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    return 1.0 if den == 0 else 2.0 * (tp * tn - fn * fp) / den


@pytest.mark.parametrize("seed", range(6))
def test_nmi_ari_against_formulas(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 40))
    labels = rng.integers(0, int(rng.integers(2, 5)), n)
    assign = np.where(rng.random(n) < 0.6, labels, rng.integers(0, int(rng.integers(2, 6)), n))
    assert nmi(assign, labels) == pytest.approx(nmi_reference(assign.tolist(), labels.tolist()), abs=1e-10)
    assert ari(assign, labels) == pytest.approx(ari_reference(assign.tolist(), labels.tolist()), abs=1e-10)


def test_nmi_ari_hand_values():
    # u = {0,1 | 2,3}, v = {0 | 1,2,3}: pairs TP=1, FN=1, FP=2, TN=2 -> ARI = 2(2-2)/... = 0
    assert ari([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(0.0)
    # independent labelings in a 2x2 product design: MI = 0
    assert nmi([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)


def test_perfect_clustering_up_to_permutation():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    perm = np.array([2, 0, 3, 1])
    probs = np.full((200, 4), 0.1)
    probs[np.arange(200), perm[labels]] = 0.7
    out = clustering_metrics(torch.tensor(probs), labels, prefix="val/")
    assert set(out) == {
        f"val/{k}"
        for k in ["acc_paper", "acc_makhzani", "acc_hungarian", "acc_majority", "nmi", "ari", "active_components"]
    }
    for k, v in out.items():
        assert isinstance(v, float)
        assert v == pytest.approx(4.0 if k.endswith("active_components") else 1.0), k
    assert paper_accuracy(probs, labels)[1].tolist() == np.argsort(perm).tolist()


def test_clustering_metrics_imperfect_values():
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.3, 0.5, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.1, 0.1, 0.1, 0.7]])
    labels = np.array([0, 0, 1, 1])
    out = clustering_metrics(probs, labels)
    assert out["test/acc_paper"] == pytest.approx(0.5)
    assert out["test/acc_makhzani"] == pytest.approx(0.75)
    assert out["test/acc_hungarian"] == pytest.approx(0.5)  # assign [0,1,1,3]: best one-to-one 2 of 4
    assert out["test/acc_majority"] == pytest.approx(0.75)  # k1 holds one of each class: ties -> label 0
    assert out["test/active_components"] == 3.0
    assert out["test/ari"] == pytest.approx(ari_reference([0, 1, 1, 3], [0, 0, 1, 1]))


def test_active_components_threshold():
    assign = np.repeat(np.arange(5), [50, 30, 15, 4, 1])
    assert active_components(assign, 7) == 5
    assert active_components(assign, 7, threshold=0.05) == 3
    assert active_components(assign, 7, threshold=0.04) == 4
    assert active_components(assign, 7, threshold=0.5) == 1
    assert active_components(one_hot(assign, 7)) == 5  # soft input -> argmax
    with pytest.raises(WAEError):
        active_components(assign, 3)  # index 4 present


def test_clustering_input_errors():
    probs = np.full((3, 2), 0.5)
    with pytest.raises(WAEError):
        paper_accuracy(probs, [0, 1])  # length mismatch
    with pytest.raises(WAEError):
        paper_accuracy(probs, [0, -1, 1])  # negative label
    with pytest.raises(WAEError):
        paper_accuracy(np.full((3, 2), 0.3), [0, 1, 1])  # rows do not sum to 1
    with pytest.raises(WAEError):
        makhzani_accuracy(np.array([[np.nan, 1.0]]), [0])
    with pytest.raises(WAEError):
        hungarian_accuracy([0, 1], [0.5, 1.0])  # non-integer labels


# ================================================================================================== distances
def test_pairwise_sq_dists_against_loop():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 2, 3, generator=g, dtype=torch.float64)  # flattened to d = 6
    b = torch.randn(5, 6, generator=g, dtype=torch.float64)
    d = pairwise_sq_dists(a, b)
    ref = torch.tensor(
        [[float(((a[i].flatten() - b[j]) ** 2).sum()) for j in range(5)] for i in range(7)], dtype=torch.float64
    )
    torch.testing.assert_close(d, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(pairwise_sq_dists(a, b, chunk_size=3), d)
    assert pairwise_sq_dists(a, a).diagonal().abs().max() < 1e-12
    assert (pairwise_sq_dists(a.float() * 1e3, a.float() * 1e3) >= 0).all()  # clamped
    np.testing.assert_allclose(pairwise_sq_dists(np.array([[0.0, 0.0]]), [[3.0, 4.0]]).numpy(), [[25.0]])
    with pytest.raises(WAEError):
        pairwise_sq_dists(torch.zeros(2, 3), torch.zeros(2, 4))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6])
def test_exact_w2_against_permutations(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 3))
    y = rng.standard_normal((n, 3)) + 0.5
    best = min(
        np.mean([np.sum((x[i] - y[p[i]]) ** 2) for i in range(n)]) for p in itertools.permutations(range(n))
    )
    assert exact_w2(x, y) == pytest.approx(math.sqrt(best), rel=1e-10)


def test_exact_w2_one_dimensional_sorted_matching_and_properties():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(200)[:, None]
    y = rng.exponential(size=200)[:, None]
    ref = math.sqrt(np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2))
    assert exact_w2(x, y) == pytest.approx(ref, rel=1e-9)
    assert exact_w2(torch.tensor(y), torch.tensor(x)) == pytest.approx(ref, rel=1e-9)  # symmetric, torch in
    z = rng.standard_normal((50, 1, 4, 4))  # image-shaped samples are flattened
    assert exact_w2(z, z) == 0.0
    shift = rng.standard_normal(16)
    # a translation: W2(z, z + c) = ‖c‖ (translation-equivariant coupling is the identity)
    assert exact_w2(z, z + shift.reshape(1, 1, 4, 4)) == pytest.approx(np.linalg.norm(shift), rel=1e-9)
    with pytest.raises(WAEError):
        exact_w2(x, y[:199])


def random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_frechet_isotropic_and_commuting_closed_forms():
    rng = np.random.default_rng(0)
    d = 5
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = 2.0, 0.3
    expected = np.sum((mu1 - mu2) ** 2) + d * (math.sqrt(a) - math.sqrt(b)) ** 2
    assert frechet_distance(mu1, a * np.eye(d), mu2, b * np.eye(d)) == pytest.approx(expected, rel=1e-10)
    # commuting: same eigenbasis
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    ea, eb = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    s1, s2 = (q * ea) @ q.T, (q * eb) @ q.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(ea) - np.sqrt(eb)) ** 2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # 1-D: (μ1 − μ2)² + (σ1 − σ2)²
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)
    # torch inputs, identical Gaussians
    assert frechet_distance(torch.tensor(mu1), torch.tensor(s1), mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_general_spd_against_independent_formulas():
    rng = np.random.default_rng(1)
    # 2x2: tr sqrt(A) = sqrt(tr A + 2 sqrt(det A)) for A = Σ1Σ2 with positive eigenvalues
    for _ in range(5):
        s1, s2 = random_spd(rng, 2), random_spd(rng, 2)
        mu1, mu2 = rng.standard_normal(2), rng.standard_normal(2)
        A = s1 @ s2
        tr_sqrt = math.sqrt(np.trace(A) + 2 * math.sqrt(np.linalg.det(A)))
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # general d: principal square root of the (non-symmetric) product by scipy's Schur method
    for d in (3, 8):
        s1, s2 = random_spd(rng, d), random_spd(rng, d)
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
        assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-8)  # symmetric


def test_frechet_singular_covariance_and_errors():
    rng = np.random.default_rng(2)
    v = rng.standard_normal((3, 10))
    s1 = v.T @ v  # rank 3 in d = 10
    s2 = random_spd(rng, 10)
    val = frechet_distance(np.zeros(10), s1, np.zeros(10), s2)
    assert np.isfinite(val) and val > 0
    assert frechet_distance(np.zeros(10), s1, np.zeros(10), s1) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(WAEError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(WAEError):
        frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))


def test_fid_from_features_large_gaussian_samples():
    rng = np.random.default_rng(0)
    d = 4
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 2.0])
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    expected = frechet_distance(mu1, s1, mu2, s2)
    f1 = rng.multivariate_normal(mu1, s1, 50_000)
    f2 = rng.multivariate_normal(mu2, s2, 50_000)
    assert fid_from_features(f1, f2) == pytest.approx(expected, rel=0.03)
    assert fid_from_features(f1, f1) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(WAEError):
        fid_from_features(f1[:1], f2)


def kid_brute_force(x, y, degree=3, gamma=None, coef0=1.0):
    d = x.shape[1]
    g = 1.0 / d if gamma is None else gamma

    def k(a, b):
        return (g * sum(a[i] * b[i] for i in range(d)) + coef0) ** degree

    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_kid_against_double_loop():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3))
    y = rng.standard_normal((7, 3)) + 0.3
    # subset_size >= both sizes: every subset is the whole set (in some order): value is exact, std 0
    mean, std = kid(x, y, subsets=3, subset_size=100)
    assert mean == pytest.approx(kid_brute_force(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)
    mean, _ = kid(torch.tensor(x), y, subsets=1, subset_size=100, degree=2, gamma=0.5, coef0=2.0)
    assert mean == pytest.approx(kid_brute_force(x, y, degree=2, gamma=0.5, coef0=2.0), rel=1e-10)


def test_kid_same_vs_shifted_distribution():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 16))
    y = rng.standard_normal((2000, 16))
    z = rng.standard_normal((2000, 16)) + 0.5
    m0, s0 = kid(x, y, subsets=20, subset_size=500)
    m1, s1 = kid(x, z, subsets=20, subset_size=500)
    assert abs(m0) < 3 * s0 + 1e-3
    assert m1 > 0 and m1 > 10 * s1 and m1 > 20 * abs(m0)
    # deterministic given the seed
    assert kid(x, z, subsets=20, subset_size=500) == (m1, s1)
    with pytest.raises(WAEError):
        kid(x, z[:, :8])


# --- improved precision / recall --------------------------------------------------------------------------------


def precision_recall_brute_force(real, fake, k):
    """Kynkäänniemi et al. (2019) with explicit loops: balls of k-th-neighbour radius around each point."""
    def radii(f):
        out = []
        for i in range(len(f)):
            d = sorted(float(np.sum((f[i] - f[j]) ** 2)) for j in range(len(f)) if j != i)
            out.append(d[k - 1])
        return out

    def covered(points, centres, r):
        return np.mean([any(np.sum((p - c) ** 2) <= rc for c, rc in zip(centres, r)) for p in points])

    return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


@pytest.mark.parametrize("k", [1, 3])
def test_precision_recall_against_brute_force(k):
    rng = np.random.default_rng(k)
    real = rng.standard_normal((40, 3))
    fake = rng.standard_normal((35, 3)) * 1.3 + 1.0
    p, r = precision_recall(real, fake, k=k, chunk_size=7)  # chunks that do not divide the sizes
    bp, br = precision_recall_brute_force(real, fake, k)
    assert (p, r) == (pytest.approx(bp), pytest.approx(br))
    assert 0 < p < 1 and 0 < r < 1


def test_precision_recall_known_cases():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((300, 4))
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    # far away: nothing of either set is inside the other's manifold
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)
    # mode dropping: samples from one half of the data are faithful (precision 1) but cover about half (recall)
    half = real[real[:, 0] > 0]
    p, r = precision_recall(real, half)
    assert p == 1.0 and 0.3 < r < 0.7
    # blur / spread: samples spread 3x wider cover the data (recall high) but are mostly unfaithful
    p, r = precision_recall(real, 3.0 * rng.standard_normal((300, 4)))
    assert r > 0.9 and p < 0.5
    with pytest.raises(WAEError):
        precision_recall(real, real[:3], k=3)
    with pytest.raises(WAEError):
        precision_recall(real, real[:, :2])


# --- cluster → class maps from the data each paper uses; k-means with the run's K; the paper's row (issue 34, 3) --


def test_makhzani_map_from_a_labelled_validation_set_by_hand():
    """Makhzani et al. label each cluster by its most confident *validation* point, then score the test points;
    the default (the GMVAE paper's reading) takes that point from the test points themselves."""
    test_p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    test_y = np.array([0, 1, 1, 1])
    val_p = np.array([[0.6, 0.4], [0.95, 0.05], [0.2, 0.8], [0.1, 0.9]])
    val_y = np.array([0, 1, 0, 2])
    # by hand: k0's most confident validation point is row 1 (0.95, label 1), k1's row 3 (0.9, label 2)
    acc, mapping = makhzani_accuracy(test_p, test_y, val_p, val_y)
    assert mapping.tolist() == [1, 2]
    assert acc == pytest.approx(1 / 4)  # test argmax [0, 0, 1, 1] -> [1, 1, 2, 2] against [0, 1, 1, 1]
    # from the test points themselves: k0 <- row 0 (label 0), k1 <- row 2 (label 1)
    acc, mapping = makhzani_accuracy(test_p, test_y)
    assert mapping.tolist() == [0, 1] and acc == pytest.approx(3 / 4)
    out = clustering_metrics(test_p, test_y, val_probs=val_p, val_labels=val_y)
    assert out["test/acc_makhzani"] == pytest.approx(3 / 4) and out["test/acc_makhzani_valmap"] == pytest.approx(1 / 4)
    assert "test/acc_makhzani_valmap" not in clustering_metrics(test_p, test_y)
    with pytest.raises(WAEError, match="both"):
        makhzani_accuracy(test_p, test_y, val_p)


def test_kmeans_baseline_uses_the_runs_k_and_scores_it_the_same_ways():
    """k-means with K clusters scored by every map the model gets; its "most confident" point of a cluster is the
    one nearest its centroid (checked against a brute-force map from sklearn's own fit)."""
    from sklearn.cluster import KMeans

    from wae.data import Dataset
    from wae.evaluation.baselines import kmeans_baseline

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 4)) * 5

    def blobs(n):
        y = rng.integers(0, 3, n)
        return Dataset("b", torch.tensor(centres[y] + rng.normal(size=(n, 4)), dtype=torch.float32), torch.tensor(y))

    train, test, val = blobs(300), blobs(90), blobs(30)
    out = kmeans_baseline(train.x, test.x, test.y, 6, seed=0, prefix="test/", map_x=val.x, map_y=val.y)
    assert set(out) == {f"test/kmeans_{k}" for k in ("acc_hungarian", "acc_paper", "acc_makhzani", "ari", "seconds",
                                                      "acc_makhzani_valmap", "acc_majority", "nmi")}
    km = KMeans(n_clusters=6, n_init=3, random_state=0).fit(train.x.numpy().astype(np.float64))
    xt, yt = test.x.numpy().astype(np.float64), test.y.numpy()
    pred = km.predict(xt)
    for xs, ys, key in ((xt, yt, "acc_makhzani"), (val.x.numpy().astype(np.float64), val.y.numpy(),
                                                    "acc_makhzani_valmap")):
        nearest = [int(np.argmin(((xs - c) ** 2).sum(1))) for c in km.cluster_centers_]
        mapping = ys[nearest]
        assert out[f"test/kmeans_{key}"] == pytest.approx(np.mean(mapping[pred] == yt))
    # six clusters of three blobs: one-to-one maps leave three clusters unlabelled, many-to-one ones do not
    assert out["test/kmeans_acc_hungarian"] < 0.9 < out["test/kmeans_acc_makhzani"]
    assert out["test/kmeans_acc_majority"] == pytest.approx(1.0)


def test_the_report_puts_the_papers_row_for_the_runs_k_beside_it():
    from wae.reports import GMVAE_TABLE1, clustering_headline, paper_clustering

    metrics = {"eval_split": "test", "model": "gmvae", "test/acc_hungarian": 0.6, "test/acc_makhzani": 0.93,
               "test/acc_makhzani_valmap": 0.92, "test/kmeans_acc_hungarian": 0.32, "test/kmeans_acc_makhzani": 0.75,
               "test/kmeans_acc_makhzani_valmap": 0.74}
    header, rows = clustering_headline(metrics, "gmvae", K=30, M=1)
    cap = [h for h in header if "most confident" in h]
    assert any("this split" in h for h in cap) and any("validation" in h for h in cap)  # the map's data named
    paper = rows[-1]
    assert "K = 30" in paper[0] and "0.9277" in paper and "0.7778" not in paper  # not the K = 10 row
    km = rows[1]
    assert "K = 30" in km[0] and "0.75" in km and "0.74" in km  # k-means with the run's K, same maps
    assert paper_clustering("gmvae", 10, 1)[1] == {"acc_makhzani": GMVAE_TABLE1[(10, 1)][1] / 100}
    assert paper_clustering("gmvae", 20, 1)[1] == {}  # no Table 1 row for K = 20: nothing beside the run
    assert paper_clustering("gm-wae", 10)[1] == {"acc_paper": 0.76} and paper_clustering("gm-wae", 30)[1] == {}
