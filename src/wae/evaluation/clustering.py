"""Unsupervised clustering metrics for mixture-prior autoencoders (GM-WAE, GMVAE, …).

Inputs are soft assignments ``probs`` (n × K, q(k|x), rows summing to 1) and/or hard assignments ``assign``
(n ints in 0..K-1), and true ``labels`` (n ints in 0..C-1). NumPy arrays and torch tensors (any device) are
accepted; everything is computed in NumPy float64.

Accuracy protocols (they differ, and papers are not comparable across them):

* :func:`paper_accuracy` — GM-WAE (Gaujac et al., §3.2): a one-to-one *greedy* matching of classes to
  components on the class-averaged responsibilities M[ℓ, k] = mean_{x ∈ class ℓ} q(k|x) of the evaluated points.
* :func:`makhzani_accuracy` — each cluster takes the label of its most confident point (not its majority label);
  clusters may share labels. Where that point comes from differs: the GMVAE paper (§4.2) takes it from the
  evaluated (test) points themselves (the default); Makhzani et al. (adversarial autoencoders) from a labelled
  *validation* set (pass ``map_probs``/``map_labels``), then score the test set.
* :func:`hungarian_accuracy` — optimal one-to-one matching (linear_sum_assignment) on the contingency matrix.
* :func:`majority_accuracy` — many-to-one: every cluster takes its majority label (an upper bound on the
  one-to-one accuracies for the same hard assignment).

Convention for matrices: :func:`contingency` and :func:`class_cluster_matrix` are both **classes × clusters**
(rows ℓ, columns k), ready for a heat map. Mappings returned by the accuracy functions are **cluster → label**
arrays of length K with ``-1`` for a cluster that received no label; a point whose cluster has label ``-1`` is
counted as wrong.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import WAEError

__all__ = [
    "contingency",
    "class_cluster_matrix",
    "paper_accuracy",
    "makhzani_accuracy",
    "most_confident_labels",
    "ACCURACY_MAPS",
    "hungarian_accuracy",
    "majority_accuracy",
    "nmi",
    "ari",
    "active_components",
    "clustering_metrics",
    "consensus_partition",
    "align_partition",
]


# ----------------------------------------------------------------------------------------------- input checks
def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _labels(labels: Any, n: int | None = None, name: str = "labels") -> np.ndarray:
    lab = _to_numpy(labels)
    if lab.ndim != 1:
        raise WAEError(f"{name} must be a 1-D array of ints, got shape {tuple(lab.shape)}")
    if lab.size == 0:
        raise WAEError(f"{name} is empty")
    if lab.dtype.kind == "f":
        if not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)):
            raise WAEError(f"{name} must hold integers")
    elif lab.dtype.kind not in "iub":
        raise WAEError(f"{name} must hold integers, got dtype {lab.dtype}")
    lab = lab.astype(np.int64)
    if lab.min() < 0:
        raise WAEError(f"{name} must be non-negative, got minimum {lab.min()}")
    if n is not None and lab.shape[0] != n:
        raise WAEError(f"{name} has {lab.shape[0]} entries but there are {n} points")
    return lab


def _probs(probs: Any) -> np.ndarray:
    p = _to_numpy(probs).astype(np.float64, copy=False)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise WAEError(f"probs must be a non-empty (n, K) array, got shape {tuple(p.shape)}")
    if not np.all(np.isfinite(p)):
        raise WAEError("probs contains NaN or inf")
    if p.min() < 0:
        raise WAEError("probs must be non-negative")
    if np.max(np.abs(p.sum(1) - 1.0)) > 1e-3:
        raise WAEError("the rows of probs must sum to 1 (soft assignments q(k|x))")
    return p


def _assign(assign: Any, n: int | None = None) -> np.ndarray:
    """Hard assignments; a 2-D input is taken as soft assignments and reduced by argmax."""
    a = _to_numpy(assign)
    if a.ndim == 2:
        return _probs(a).argmax(1)
    return _labels(a, n, name="assign")


def _num(x: np.ndarray, given: int | None, what: str) -> int:
    needed = int(x.max()) + 1
    if given is None:
        return needed
    if given < needed:
        raise WAEError(f"{what}={given} but the data holds index {needed - 1}")
    return int(given)


# ---------------------------------------------------------------------------------------------------- matrices
def contingency(assign: Any, labels: Any, K: int | None = None, C: int | None = None) -> np.ndarray:
    """Counts N[ℓ, k] = #{i : labels_i = ℓ, assign_i = k}, shape (C, K) — classes × clusters (int64)."""
    a = _assign(assign)
    lab = _labels(labels, a.shape[0])
    K = _num(a, K, "K")
    C = _num(lab, C, "C")
    out = np.zeros((C, K), dtype=np.int64)
    np.add.at(out, (lab, a), 1)
    return out


def class_cluster_matrix(probs: Any, labels: Any, num_classes: int | None = None) -> np.ndarray:
    """M[ℓ, k] = mean of q(k|x) over the points x of class ℓ, shape (C, K).

    A class with no points gets a row of zeros (no NaN in heat maps); :func:`paper_accuracy` ignores such
    classes.
    """
    p = _probs(probs)
    lab = _labels(labels, p.shape[0])
    C = _num(lab, num_classes, "num_classes")
    sums = np.zeros((C, p.shape[1]))
    np.add.at(sums, lab, p)
    counts = np.bincount(lab, minlength=C).astype(np.float64)
    return sums / np.maximum(counts, 1.0)[:, None]


def _accuracy(pred_cluster: np.ndarray, mapping: np.ndarray, labels: np.ndarray) -> float:
    pred = mapping[pred_cluster]  # -1 for clusters without a label: never equal to a label ≥ 0
    return float(np.mean(pred == labels))


# -------------------------------------------------------------------------------------------------- accuracies
def paper_accuracy(
    probs: Any, labels: Any, num_classes: int | None = None, variant: str = "class_order"
) -> tuple[float, np.ndarray]:
    """Clustering accuracy with the greedy one-to-one protocol of the GM-WAE paper (Gaujac et al., §3.2).

    1. M[ℓ, k] = mean of q(k|x) over the points of class ℓ (:func:`class_cluster_matrix`).
    2. Greedy matching, each k used at most once. ``variant="class_order"`` (default, the reading of the paper
       used here): classes are ordered once by max_k M[ℓ, k] over *all* k, descending; each class in turn takes
       its best still-unused k. ``variant="global"``: repeatedly take the (class, k) pair with the largest
       remaining M[ℓ, k] among unassigned classes and unused k. The two agree when no class's preferred k has
       been taken, but can differ otherwise (see the tests). Neither is the optimal (Hungarian) matching.
       Ties are broken by the lower class / lower k index. Classes with no points take part in nothing.
    3. Each point is predicted ``mapping[argmax_k q(k|x)]``.

    Choices documented here: when K > C the spare components get ``mapping[k] = -1`` and **points whose
    argmax falls in a spare component count as wrong** (the accuracy is over all n points). When K < C, the
    classes left without a component are never predicted.

    Returns ``(accuracy, mapping)`` with ``mapping`` an int64 array of length K (cluster → label, -1 if none).
    """
    p = _probs(probs)
    lab = _labels(labels, p.shape[0])
    M = class_cluster_matrix(p, lab, num_classes)
    C, K = M.shape
    present = np.bincount(lab, minlength=C) > 0
    mapping = np.full(K, -1, dtype=np.int64)
    if variant == "class_order":
        row_max = M.max(1)
        classes = [c for c in np.argsort(-row_max, kind="stable") if present[c]]
        used = np.zeros(K, dtype=bool)
        for c in classes:
            if used.all():
                break  # K < C: the remaining classes get no component
            k = int(np.argmax(np.where(used, -np.inf, M[c])))
            used[k] = True
            mapping[k] = c
    elif variant == "global":
        work = np.where(present[:, None], M, -np.inf)
        for _ in range(min(int(present.sum()), K)):
            c, k = np.unravel_index(int(np.argmax(work)), work.shape)
            mapping[k] = c
            work[c, :] = -np.inf
            work[:, k] = -np.inf
    else:
        raise WAEError(f"unknown paper_accuracy variant {variant!r}; known: class_order, global")
    return _accuracy(p.argmax(1), mapping, lab), mapping


def most_confident_labels(scores: Any, labels: Any) -> np.ndarray:
    """Cluster → label: every cluster k takes the label of the point with the highest ``scores[:, k]`` (ties: the
    first such point). ``scores`` (n, K) are q(k|x), or any per-cluster confidence (k-means: minus the squared
    distance to centroid k). An int64 array of length K, no -1."""
    sc = _to_numpy(scores).astype(np.float64, copy=False)
    if sc.ndim != 2 or sc.shape[0] == 0 or not np.all(np.isfinite(sc)):
        raise WAEError(f"scores must be a finite, non-empty (n, K) array, got shape {tuple(sc.shape)}")
    lab = _labels(labels, sc.shape[0])
    return lab[sc.argmax(0)].astype(np.int64)


def makhzani_accuracy(probs: Any, labels: Any, map_probs: Any = None, map_labels: Any = None
                      ) -> tuple[float, np.ndarray]:
    """Clustering accuracy with each cluster labelled by its most confident labelled point.

    Every cluster k takes the label of the point of the *map set* with the highest q(k|x)
    (:func:`most_confident_labels`); each evaluated point is predicted ``mapping[argmax_k q(k|x)]``. The map set is
    the evaluated points themselves by default — the GMVAE paper's reading (§4.2: "the element of the test set with
    the highest probability of belonging to cluster i") — or ``map_probs``/``map_labels``, e.g. a labelled validation
    set, as Makhzani et al. do. Several clusters may carry the same label, and every cluster gets one, so the mapping
    holds no -1. Returns ``(accuracy, mapping)``.
    """
    p = _probs(probs)
    lab = _labels(labels, p.shape[0])
    if (map_probs is None) != (map_labels is None):
        raise WAEError("makhzani_accuracy needs both map_probs and map_labels, or neither")
    if map_probs is None:
        mapping = most_confident_labels(p, lab)
    else:
        mp = _probs(map_probs)
        if mp.shape[1] != p.shape[1]:
            raise WAEError(f"map_probs has {mp.shape[1]} clusters, probs {p.shape[1]}")
        mapping = most_confident_labels(mp, map_labels)
    return _accuracy(p.argmax(1), mapping, lab), mapping


def hungarian_accuracy(assign: Any, labels: Any, num_clusters: int | None = None) -> tuple[float, np.ndarray]:
    """Accuracy of the best one-to-one cluster → label matching (scipy ``linear_sum_assignment``).

    Maximises the number of matched points on the contingency matrix; K ≠ C is allowed: with K > C the
    unmatched clusters get -1 and their points count as wrong; with K < C some classes are never predicted.
    ``assign`` may also be soft assignments (n × K), reduced by argmax. Returns ``(accuracy, mapping)``.
    """
    from scipy.optimize import linear_sum_assignment

    a = _assign(assign)
    lab = _labels(labels, a.shape[0])
    if num_clusters is None and _to_numpy(assign).ndim == 2:
        num_clusters = _to_numpy(assign).shape[1]
    N = contingency(a, lab, num_clusters)  # (C, K)
    rows, cols = linear_sum_assignment(N, maximize=True)
    mapping = np.full(N.shape[1], -1, dtype=np.int64)
    mapping[cols] = rows
    return _accuracy(a, mapping, lab), mapping


def majority_accuracy(assign: Any, labels: Any, num_clusters: int | None = None) -> tuple[float, np.ndarray]:
    """Many-to-one accuracy: each cluster takes its majority label (ties: the lower label).

    Empty clusters get -1 (they predict nothing). Returns ``(accuracy, mapping)``.
    """
    a = _assign(assign)
    lab = _labels(labels, a.shape[0])
    if num_clusters is None and _to_numpy(assign).ndim == 2:
        num_clusters = _to_numpy(assign).shape[1]
    N = contingency(a, lab, num_clusters)
    mapping = np.where(N.sum(0) > 0, N.argmax(0), -1).astype(np.int64)
    return _accuracy(a, mapping, lab), mapping


# ------------------------------------------------------------------------------------------ information scores
def nmi(assign: Any, labels: Any) -> float:
    """Normalised mutual information, arithmetic normalisation: I(U;V) / ((H(U) + H(V)) / 2) (sklearn)."""
    from sklearn.metrics import normalized_mutual_info_score

    a = _assign(assign)
    lab = _labels(labels, a.shape[0])
    return float(normalized_mutual_info_score(lab, a, average_method="arithmetic"))


def ari(assign: Any, labels: Any) -> float:
    """Adjusted Rand index (Hubert & Arabie) (sklearn ``adjusted_rand_score``)."""
    from sklearn.metrics import adjusted_rand_score

    a = _assign(assign)
    lab = _labels(labels, a.shape[0])
    return float(adjusted_rand_score(lab, a))


def active_components(assign: Any, num_clusters: int | None = None, threshold: float = 0.01) -> int:
    """Number of components k that are the (argmax) assignment of at least ``threshold`` of the points."""
    if not 0.0 <= threshold <= 1.0:
        raise WAEError(f"threshold must be in [0, 1], got {threshold}")
    a = _assign(assign)
    if num_clusters is None and _to_numpy(assign).ndim == 2:
        num_clusters = _to_numpy(assign).shape[1]
    K = _num(a, num_clusters, "num_clusters")
    frac = np.bincount(a, minlength=K) / a.shape[0]
    return int(np.sum(frac >= threshold))


# ------------------------------------------------------------------------------------------ ensembles of partitions
def consensus_partition(assignments: list, k: int, n_init: int = 10, seed: int = 0) -> np.ndarray:
    """The consensus of R partitions of the same n points into ``k`` clusters: k-means on the points' concatenated
    one-hot labels (n × Σ_r K_r), i.e. K-means-based consensus clustering (Wu et al., 2015; Topchy et al., 2005).

    The squared distance between two points in that space is 2 × (the number of partitions that separate them), so
    the k-means objective is the total disagreement of the points with their clusters' label profiles; a partition
    the R members agree on is returned as it is (relabelled). Scales to any n (no n × n co-association matrix).
    Returns labels 0..k-1 (sklearn ``KMeans``, ``n_init`` starts, ``seed``).
    """
    from sklearn.cluster import KMeans

    if not assignments:
        raise WAEError("consensus_partition needs at least one partition")
    parts = [_assign(a) for a in assignments]
    n = parts[0].shape[0]
    if any(p.shape[0] != n for p in parts):
        raise WAEError(f"consensus_partition: partitions of different sizes {[p.shape[0] for p in parts]}")
    if not 1 <= k <= n:
        raise WAEError(f"consensus_partition: k must be in 1..{n}, got {k}")
    onehot = np.concatenate([np.eye(int(p.max()) + 1, dtype=np.float32)[p] for p in parts], axis=1)
    return KMeans(k, n_init=n_init, random_state=seed).fit_predict(onehot).astype(np.int64)


def align_partition(labels: Any, reference: Any, k: int | None = None) -> np.ndarray:
    """``labels`` renamed so that they overlap ``reference`` the most (a one-to-one matching of label ids,
    scipy ``linear_sum_assignment`` on the contingency table): the same partition, in the reference's ids. Ids of
    ``labels`` left unmatched (more labels than reference ids) get the reference's unused ids in order."""
    from scipy.optimize import linear_sum_assignment

    a, r = _assign(labels), _assign(reference)
    if a.shape[0] != r.shape[0]:
        raise WAEError(f"align_partition: {a.shape[0]} labels against {r.shape[0]} reference labels")
    ka = int(a.max()) + 1
    k = max(k or 0, ka, int(r.max()) + 1)
    C = np.zeros((ka, k), dtype=np.int64)
    np.add.at(C, (a, r), 1)
    rows, cols = linear_sum_assignment(C, maximize=True)
    mapping = np.full(ka, -1, dtype=np.int64)
    mapping[rows] = cols
    free = iter(sorted(set(range(k)) - set(cols.tolist())))
    for i in np.flatnonzero(mapping < 0):
        mapping[i] = next(free)
    return mapping[a]


ACCURACY_MAPS = {
    "acc_paper": "greedy one-to-one map from the class-averaged q(k|x) of the evaluated split (GM-WAE paper §3.2)",
    "acc_makhzani": "each cluster labelled by its most confident point of the evaluated split (GMVAE paper §4.2)",
    "acc_makhzani_valmap": "each cluster labelled by its most confident point of the validation split, applied to the "
                           "evaluated split (Makhzani et al.)",
    "acc_hungarian": "optimal one-to-one map from the evaluated split's contingency table",
    "acc_majority": "each cluster labelled by its majority class in the evaluated split",
}
"""Accuracy key → which labelled data build its cluster → class map, and how (``metrics.json``'s
``accuracy_maps``; the report's captions)."""


def clustering_metrics(probs: Any, labels: Any, prefix: str = "test/", val_probs: Any = None,
                       val_labels: Any = None) -> dict[str, float]:
    """All clustering scores of soft assignments ``probs`` (n × K) as ``{prefix + name: float}``.

    Keys: ``acc_paper``, ``acc_makhzani``, ``acc_hungarian``, ``acc_majority``, ``nmi``, ``ari``,
    ``active_components`` (hard assignments are argmax_k q(k|x); K is ``probs.shape[1]``), and with a labelled
    validation split (``val_probs``, ``val_labels``) ``acc_makhzani_valmap``. Each accuracy's cluster → class map
    and its data: :data:`ACCURACY_MAPS`.
    """
    p = _probs(probs)
    lab = _labels(labels, p.shape[0])
    a = p.argmax(1)
    K = p.shape[1]
    scores = {
        "acc_paper": paper_accuracy(p, lab)[0],
        "acc_makhzani": makhzani_accuracy(p, lab)[0],
        "acc_hungarian": hungarian_accuracy(a, lab, K)[0],
        "acc_majority": majority_accuracy(a, lab, K)[0],
        "nmi": nmi(a, lab),
        "ari": ari(a, lab),
        "active_components": float(active_components(a, K)),
    }
    if val_probs is not None:
        scores["acc_makhzani_valmap"] = makhzani_accuracy(p, lab, val_probs, val_labels)[0]
    return {prefix + k: float(v) for k, v in scores.items()}
