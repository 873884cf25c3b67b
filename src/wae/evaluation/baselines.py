"""The clustering baselines every clustering result is shown beside: k-means, and the practitioner's UMAP → Gaussian
mixture (the N2D recipe on the raw inputs, without its autoencoder: McConville et al., 2019).

Both cluster the inputs as the model sees them, flattened to vectors. k-means is fitted on the data given to it
(a run: the training split, then assigns the scored split); UMAP → GMM clusters the scored points themselves (no
labels read; transductive, a stronger bar than a fit on other data). Their metrics are named like the model's with
the baseline's name in front: ``{prefix}kmeans_acc_hungarian``, ``{prefix}umap_gmm_nmi``, … (:func:`baseline_scores`),
and ``{prefix}NAME_seconds``, the wall time the baseline took. umap-learn is an optional extra (``pip install
'wae[umap]'``): without it :func:`umap_gmm_scores` returns no metric, only the one line ``{prefix}umap_gmm_note``.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import WAEError
from .clustering import ari, hungarian_accuracy, majority_accuracy, most_confident_labels, nmi, paper_accuracy

__all__ = ["UMAP_MAX_FIT", "UMAP_MISSING", "UmapGmm", "umap_gmm_baseline", "umap_gmm_scores",
           "kmeans_baseline", "baseline_scores"]

UMAP_MAX_FIT = 20_000
"""Above this many points UMAP is fitted on a seeded subsample of this size and the other points are transformed."""

UMAP_MISSING = "UMAP → GMM baseline not computed: umap-learn is not installed (pip install 'wae[umap]')"


def _flat(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    return x.reshape(len(x), -1).astype(np.float32, copy=False)


def _umap_module():
    """umap-learn, or None when it is not installed (its import costs seconds: only called when a baseline runs)."""
    try:
        import umap
    except ImportError:
        return None
    return umap


def _exact_knn(x: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances), each (n, k): the k nearest points of every point by Euclidean distance, itself first,
    nearest first (brute force in float32, ``chunk`` rows at a time). UMAP's own search (pynndescent) costs tens of
    seconds of numba compilation per process; this costs about as much as one matrix product."""
    sq = np.einsum("ij,ij->i", x, x)
    idx = np.empty((len(x), k), dtype=np.int64)
    dist = np.empty((len(x), k), dtype=np.float32)
    for i in range(0, len(x), chunk):
        rows = np.arange(i, min(i + chunk, len(x)))
        d = sq[rows, None] + sq[None, :] - 2.0 * (x[rows] @ x.T)
        np.maximum(d, 0.0, out=d)
        d[np.arange(len(rows)), rows] = -1.0  # itself first, even among duplicates
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        pd = np.take_along_axis(d, part, 1)
        order = np.argsort(pd, axis=1, kind="stable")
        idx[rows] = np.take_along_axis(part, order, 1)
        dist[rows] = np.sqrt(np.maximum(np.take_along_axis(pd, order, 1), 0.0))
    return idx, dist


@dataclass
class UmapGmm:
    """The outcome of :func:`umap_gmm_baseline`: ``labels`` (a cluster id per point), ``seconds`` (its wall time) and
    ``note`` (how UMAP was fitted when it was not on every point, else empty)."""

    labels: np.ndarray
    seconds: float
    note: str = ""


def umap_gmm_baseline(x, k: int, seed: int = 0, max_fit: int = UMAP_MAX_FIT, n_neighbors: int = 20,
                      n_components: int = 10, n_init: int = 3) -> UmapGmm:
    """UMAP → Gaussian mixture clustering of the points ``x`` (n × …, flattened to vectors), the N2D recipe on the
    raw inputs: UMAP to ``n_components`` dimensions (``n_neighbors`` exact Euclidean neighbours, ``min_dist=0``), then
    scikit-learn's ``GaussianMixture`` with ``k`` full-covariance components (``n_init`` starts) fitted on the
    embeddings; each point gets its most probable component. The points are clustered as they are (transductive, as
    k-means on the same data): no labels are read.

    Deterministic for a ``seed`` (UMAP with a ``random_state`` runs on one thread). More than ``max_fit`` points:
    UMAP (with its own approximate neighbours) is fitted on a seeded subsample of ``max_fit`` of them and the others
    are embedded with ``transform`` (said in ``note``). Raises :class:`ImportError` when umap-learn is not installed
    (see :func:`umap_gmm_scores`)."""
    umap = _umap_module()
    if umap is None:
        raise ImportError(UMAP_MISSING)
    from sklearn.mixture import GaussianMixture

    t0 = time.time()
    xf = _flat(x)
    n = len(xf)
    if n < 3 or not 1 <= k <= n:
        raise WAEError(f"UMAP → GMM needs at least 3 points and k in 1..n; got {n} points and k = {k}")
    n_components = min(n_components, n - 2)  # UMAP's spectral start needs n_components + 1 < n
    note = ""
    n_neighbors = max(2, min(n_neighbors, n - 1))
    settings = dict(n_components=n_components, n_neighbors=n_neighbors, min_dist=0.0, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap's "n_jobs overridden by random_state", numba's notes
        if n > max_fit:  # UMAP's own neighbour index, which transform needs
            reducer = umap.UMAP(**settings)
            sub = np.sort(np.random.default_rng(seed).choice(n, max_fit, replace=False))
            rest = np.setdiff1d(np.arange(n), sub)
            emb = np.empty((n, n_components), dtype=np.float32)
            emb[sub] = reducer.fit_transform(xf[sub])
            emb[rest] = reducer.transform(xf[rest])
            note = (f"UMAP fitted on a seeded subsample of {max_fit:,} of the {n:,} points, the other "
                    f"{n - max_fit:,} transformed")
        else:  # exact neighbours handed to UMAP: its graph without its search's compile time
            knn_idx, knn_dist = _exact_knn(xf, n_neighbors)
            emb = umap.UMAP(**settings, precomputed_knn=(knn_idx, knn_dist, None)).fit_transform(xf)
    gmm = GaussianMixture(k, covariance_type="full", n_init=n_init, random_state=seed).fit(emb)
    return UmapGmm(gmm.predict(emb).astype(np.int64), time.time() - t0, note)


def baseline_scores(pred, y, name: str, prefix: str = "", seconds: float | None = None) -> dict:
    """``{prefix}{name}_acc_hungarian``, ``…_nmi``, ``…_ari`` of cluster ids ``pred`` against labels ``y`` (and
    ``…_seconds`` when given)."""
    y = np.asarray(y.cpu() if hasattr(y, "cpu") else y)
    out = {f"{prefix}{name}_acc_hungarian": float(hungarian_accuracy(pred, y)[0]),
           f"{prefix}{name}_nmi": float(nmi(pred, y)), f"{prefix}{name}_ari": float(ari(pred, y))}
    if seconds is not None:
        out[f"{prefix}{name}_seconds"] = float(seconds)
    return out


def umap_gmm_scores(x, y, k: int, seed: int = 0, prefix: str = "", max_fit: int = UMAP_MAX_FIT) -> dict:
    """:func:`umap_gmm_baseline` on the points ``x`` scored against their labels ``y``: :func:`baseline_scores` named
    ``umap_gmm`` (``{prefix}umap_gmm_acc_hungarian``, ``…_nmi``, ``…_ari``, ``…_seconds``) and, when UMAP was fitted
    on a subsample, ``{prefix}umap_gmm_note``. Without umap-learn: only ``{prefix}umap_gmm_note`` =
    :data:`UMAP_MISSING`, no metric; when the baseline fails (e.g. a handful of points), only a note saying why."""
    if _umap_module() is None:
        return {f"{prefix}umap_gmm_note": UMAP_MISSING}
    try:
        r = umap_gmm_baseline(x, k, seed, max_fit=max_fit)
    except Exception as e:  # a number beside the result: its failure must not cost the user the result itself
        why = (str(e).strip().splitlines() or [""])[0][:200]
        return {f"{prefix}umap_gmm_note": f"UMAP → GMM baseline failed: {type(e).__name__}: {why}"}
    out = baseline_scores(r.labels, y, "umap_gmm", prefix, r.seconds)
    if r.note:
        out[f"{prefix}umap_gmm_note"] = r.note
    return out


def kmeans_baseline(x_fit, x_eval, y, k: int, seed: int = 0, prefix: str = "test/", max_train: int = 10000,
                    map_x=None, map_y=None) -> dict:
    """k-means with the run's K (``k`` clusters on the flattened inputs, 3 starts) fitted on ``x_fit`` (a seeded
    subsample of ``max_train`` when larger), assigned on ``x_eval`` and scored as the model is, named ``kmeans``:
    :func:`baseline_scores` (``{prefix}kmeans_acc_hungarian``, ``…_nmi``, ``…_ari``, ``…_seconds``), ``acc_paper``
    (the greedy map on one-hot assignments), ``acc_makhzani`` (each cluster labelled by the evaluated point nearest
    its centroid — k-means' most confident point), ``acc_makhzani_valmap`` (by the nearest point of the labelled
    ``map_x``/``map_y``, when given) and ``acc_majority``: the baseline any clustering of the same split with the
    same K should beat."""
    from sklearn.cluster import KMeans

    t0 = time.time()
    xt = _flat(x_fit).astype(np.float64)
    if len(xt) > max_train:
        xt = xt[np.random.default_rng(seed).choice(len(xt), max_train, replace=False)]
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(xt)
    xe = _flat(x_eval).astype(np.float64)
    pred = km.predict(xe)
    seconds = time.time() - t0
    y = np.asarray(y.cpu() if hasattr(y, "cpu") else y)

    def scored(mapping) -> float:
        return float(np.mean(mapping[pred] == y))

    out = {"acc_paper": paper_accuracy(np.eye(k)[pred], y)[0], "acc_makhzani": scored(most_confident_labels(
        -km.transform(xe), y)), "acc_majority": majority_accuracy(pred, y, k)[0]}
    if map_x is not None and map_y is not None:
        ym = np.asarray(map_y.cpu() if hasattr(map_y, "cpu") else map_y)
        out["acc_makhzani_valmap"] = scored(most_confident_labels(-km.transform(_flat(map_x).astype(np.float64)), ym))
    return {**baseline_scores(pred, y, "kmeans", prefix, seconds),
            **{f"{prefix}kmeans_{name}": float(v) for name, v in out.items()}}
