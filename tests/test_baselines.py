"""The clustering baselines (wae.evaluation.baselines): UMAP → GMM finds clusters whose answer is known and is
deterministic for a seed; the subsample path places every embedding at its own point; without umap-learn the
result is one line, never a crash; k-means' metrics match an independent sklearn computation."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from wae.evaluation.baselines import UMAP_MISSING, kmeans_baseline, umap_gmm_baseline, umap_gmm_scores


def separated_blobs(n_per=100, k=4, d=30, seed=0):
    """k clusters in d dimensions, centres 40 apart along their own axis, unit noise: any sane method is exact."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per)
    x = 40.0 * np.eye(k, d)[y] + rng.normal(size=(len(y), d))
    perm = rng.permutation(len(y))  # classes interleaved, so that a subsample/placement bug cannot line up by luck
    return x[perm].astype(np.float32), y[perm]


@pytest.mark.slow  # UMAP's first call compiles its numba code (~10-30 s on one core)
def test_umap_gmm_recovers_known_clusters_and_is_deterministic():
    pytest.importorskip("umap")
    from sklearn.datasets import load_digits

    x, y = separated_blobs()
    m = umap_gmm_scores(x, y, 4, seed=0, prefix="test/")
    assert m["test/umap_gmm_acc_hungarian"] == 1.0 and m["test/umap_gmm_nmi"] > 0.99
    assert m["test/umap_gmm_seconds"] > 0 and "test/umap_gmm_note" not in m
    # more points than max_fit: UMAP fitted on a seeded subsample, the rest transformed into place
    sub = umap_gmm_baseline(x, 4, seed=1, max_fit=150)
    assert "150 of the 400 points" in sub.note
    assert umap_gmm_scores(x, y, 4, seed=1, max_fit=150)["umap_gmm_acc_hungarian"] == 1.0
    # real digits (sklearn's 8×8, 600 of them): far above chance (0.1) and above k-means on the same points
    X, Y = load_digits(return_X_y=True)
    X, Y = X[:600] / 16.0, Y[:600]
    a = umap_gmm_baseline(X, 10, seed=0)
    b = umap_gmm_baseline(X, 10, seed=0)
    assert np.array_equal(a.labels, b.labels)  # deterministic for a seed
    digits = umap_gmm_scores(X, Y, 10, seed=0)
    km = kmeans_baseline(X, X, Y, 10, seed=0, prefix="")
    assert digits["umap_gmm_acc_hungarian"] > 0.7 and digits["umap_gmm_nmi"] > 0.7
    assert digits["umap_gmm_nmi"] > km["kmeans_nmi"]


def test_exact_neighbours_match_sklearn():
    from sklearn.neighbors import NearestNeighbors

    from wae.evaluation.baselines import _exact_knn

    x = np.random.default_rng(3).normal(size=(300, 7)).astype(np.float32)
    x[17] = x[4]  # a duplicate: each of the two still comes first in its own list
    idx, dist = _exact_knn(x, 6, chunk=64)  # several chunks, the last one short
    d_ref, i_ref = NearestNeighbors(n_neighbors=6).fit(x).kneighbors(x)
    assert np.array_equal(idx[:, 0], np.arange(300)) and idx[4, 1] == 17 and idx[17, 1] == 4
    keep = ~np.isin(i_ref, [4, 17]).any(1)  # lists holding the twins may order them either way
    assert keep.sum() > 250 and np.array_equal(idx[keep], i_ref[keep])
    np.testing.assert_allclose(dist, d_ref, atol=1e-3)


def test_without_umap_one_line_and_no_metric(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` now raises ImportError
    x, y = separated_blobs(n_per=5)
    assert umap_gmm_scores(x, y, 4, prefix="test/") == {"test/umap_gmm_note": UMAP_MISSING}
    assert "\n" not in UMAP_MISSING and "pip install" in UMAP_MISSING
    with pytest.raises(ImportError, match="umap-learn is not installed"):
        umap_gmm_baseline(x, 4)


def test_kmeans_baseline_matches_sklearn_and_is_named_like_the_model():
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    x, y = separated_blobs(n_per=30, k=3, d=5, seed=2)
    m = kmeans_baseline(x[:60], x, y, 3, seed=0, prefix="val/")
    assert set(m) == {f"val/kmeans_{k}" for k in ("acc_hungarian", "nmi", "ari", "seconds", "acc_paper",
                                                   "acc_makhzani", "acc_majority")}
    pred = KMeans(3, n_init=3, random_state=0).fit(x[:60].astype(np.float64)).predict(x.astype(np.float64))
    assert m["val/kmeans_nmi"] == pytest.approx(normalized_mutual_info_score(y, pred))
    assert m["val/kmeans_ari"] == pytest.approx(adjusted_rand_score(y, pred))
    assert m["val/kmeans_acc_hungarian"] == 1.0  # separated blobs


def test_a_failing_baseline_is_a_note_not_a_crash(monkeypatch):
    from wae.evaluation import baselines

    def boom(*a, **kw):
        raise RuntimeError("spectral start failed\nsecond line")

    monkeypatch.setattr(baselines, "_umap_module", lambda: object())
    monkeypatch.setattr(baselines, "umap_gmm_baseline", boom)
    x, y = separated_blobs(n_per=5)
    assert umap_gmm_scores(x, y, 4, prefix="val/") == {
        "val/umap_gmm_note": "UMAP → GMM baseline failed: RuntimeError: spectral start failed"}
