"""Distances between sets of samples: exact empirical 2-Wasserstein, Fréchet (FID) and kernel (KID) distances.

* :func:`pairwise_sq_dists` — ‖a_i − b_j‖² in torch, O(n·m) memory, optionally chunked over rows of ``a``.
* :func:`exact_w2` — the exact W2 between two equal-size empirical measures (optimal assignment).
* :func:`frechet_distance` / :func:`fid_from_features` — the Fréchet distance between Gaussians fitted to
  features (W2² between the Gaussians; FID when the features are Inception pool features).
* :func:`kid` — the kernel inception distance: unbiased MMD² with the cubic polynomial kernel, averaged over
  random subsets (Bińkowski et al., 2018).
* :func:`precision_recall` — improved precision and recall (Kynkäänniemi et al., 2019): fidelity and coverage
  separately, where FID/KID mix them into one number.

Feature extraction (Inception or otherwise) is not done here.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import WAEError

__all__ = [
    "pairwise_sq_dists",
    "exact_w2",
    "frechet_distance",
    "fid_from_features",
    "kid",
    "precision_recall",
]


def _as_tensor(x: Any) -> Tensor:
    if isinstance(x, Tensor):
        return x
    return torch.as_tensor(np.asarray(x))


def _as_2d_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0 or a.shape[0] == 0:
        raise WAEError(f"{name} must be a non-empty batch of samples, got shape {tuple(a.shape)}")
    a = a.reshape(a.shape[0], -1)
    if not np.all(np.isfinite(a)):
        raise WAEError(f"{name} contains NaN or inf")
    return a


def pairwise_sq_dists(a: Any, b: Any, chunk_size: int | None = None) -> Tensor:
    """Squared Euclidean distances D[i, j] = ‖a_i − b_j‖², shape (n, m).

    Computed as ‖a‖² + ‖b‖² − 2 a·bᵀ, clamped at 0: O(n·m) memory, never an (n, m, d) tensor. Samples are
    flattened to vectors (``a`` of shape (n, …), ``b`` of shape (m, …) with the same trailing size). With
    ``chunk_size`` the rows of ``a`` are processed ``chunk_size`` at a time (bounding the temporary memory of the
    matrix product to chunk_size × m). The result has the promoted dtype of the inputs (floats; ints → float32);
    pass float64 inputs when cancellation matters (nearly equal, large-norm vectors).
    """
    a = _as_tensor(a)
    b = _as_tensor(b)
    if a.dim() == 0 or b.dim() == 0:
        raise WAEError("pairwise_sq_dists needs batches of vectors, got a scalar")
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    if a.shape[1] != b.shape[1]:
        raise WAEError(f"pairwise_sq_dists: dimension mismatch {a.shape[1]} vs {b.shape[1]}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    a = a.to(dtype)
    b = b.to(dtype=dtype, device=a.device)
    b2 = b.pow(2).sum(1)
    if chunk_size is None or chunk_size >= a.shape[0]:
        return (a.pow(2).sum(1, keepdim=True) + b2 - 2.0 * a @ b.T).clamp_min_(0.0)
    if chunk_size < 1:
        raise WAEError(f"chunk_size must be ≥ 1, got {chunk_size}")
    out = torch.empty(a.shape[0], b.shape[0], dtype=dtype, device=a.device)
    for s in range(0, a.shape[0], chunk_size):
        ac = a[s : s + chunk_size]
        out[s : s + chunk_size] = (ac.pow(2).sum(1, keepdim=True) + b2 - 2.0 * ac @ b.T).clamp_min_(0.0)
    return out


def exact_w2(x: Any, y: Any) -> float:
    """Exact 2-Wasserstein distance between the empirical measures of two equal-size samples.

    W2(x, y) = sqrt( min_σ (1/n) Σ_i ‖x_i − y_σ(i)‖² ) over permutations σ: with uniform weights on n points
    each, an optimal coupling is a permutation (Birkhoff), found exactly by ``scipy.optimize.
    linear_sum_assignment`` on the n × n matrix of squared Euclidean distances (computed in float64); the
    distances of the matched pairs are then recomputed directly, so W2(x, x) is exactly 0. Samples are
    flattened to vectors. Unequal sample sizes raise :class:`WAEError`.

    Cost: O(n² d) for the cost matrix and O(n³) worst case for the assignment, 8·n² bytes of memory. Measured
    on a 2-core CPU with d = 784: n = 2000 takes 0.6–0.9 s (≈ 0.1 s cost matrix, the rest the assignment;
    Gaussian, uniform and clustered MNIST-like data), n = 1000 ≈ 0.25 s, n = 5000 ≈ 8.5 s. Beyond ~10⁴ points
    use a sub-sample or an entropic approximation.
    """
    xa = _as_2d_numpy(x, "x")
    ya = _as_2d_numpy(y, "y")
    if xa.shape[0] != ya.shape[0]:
        raise WAEError(f"exact_w2 needs equal sample sizes, got {xa.shape[0]} and {ya.shape[0]}")
    if xa.shape[1] != ya.shape[1]:
        raise WAEError(f"exact_w2: dimension mismatch {xa.shape[1]} vs {ya.shape[1]}")
    from scipy.optimize import linear_sum_assignment

    cost = pairwise_sq_dists(torch.from_numpy(xa), torch.from_numpy(ya)).numpy()
    rows, cols = linear_sum_assignment(cost)
    # The matched costs are recomputed directly (O(n·d)): the expanded form above carries round-off
    # (≈1e-15 relative to ‖x‖², so W2(x, x) would come out ≈1e-8 instead of 0).
    matched = np.sum((xa[rows] - ya[cols]) ** 2, axis=1)
    return float(np.sqrt(matched.mean()))


def _sym(m: np.ndarray) -> np.ndarray:
    return 0.5 * (m + m.T)


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet distance ‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2}) between N(μ1, Σ1) and N(μ2, Σ2).

    This is the *squared* W2 distance between the two Gaussians (and the FID for Inception features). The
    trace term uses tr (Σ1 Σ2)^{1/2} = tr (Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2} = Σ_i sqrt(λ_i), λ_i the eigenvalues of the
    symmetric PSD matrix Σ1^{1/2} Σ2 Σ1^{1/2}, computed in float64 with symmetric eigendecompositions (negative
    round-off eigenvalues clipped to 0). Unlike ``scipy.linalg.sqrtm(Σ1 Σ2)`` this needs no ε-offset fallback:
    it stays real and finite for singular covariances (e.g. fewer samples than dimensions). The result is
    clipped at 0 (tiny negative round-off).
    """
    m1 = np.atleast_1d(np.asarray(_np(mu1), dtype=np.float64))
    m2 = np.atleast_1d(np.asarray(_np(mu2), dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(_np(sigma1), dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(_np(sigma2), dtype=np.float64))
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise WAEError(
            "frechet_distance: expected means of shape (d,) and covariances (d, d), got "
            f"{m1.shape}, {s1.shape}, {m2.shape}, {s2.shape}"
        )
    for name, arr in (("mu1", m1), ("mu2", m2), ("sigma1", s1), ("sigma2", s2)):
        if not np.all(np.isfinite(arr)):
            raise WAEError(f"frechet_distance: {name} contains NaN or inf")
    s1 = _sym(s1)
    s2 = _sym(s2)
    r1 = _psd_sqrt(s1)
    lam = np.linalg.eigvalsh(_sym(r1 @ s2 @ r1))
    tr_covmean = float(np.sqrt(np.clip(lam, 0.0, None)).sum())
    diff = m1 - m2
    val = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(val, 0.0)


def _np(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return x


def fid_from_features(f1: Any, f2: Any) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (n_i × d): sample means and unbiased
    (n − 1) covariances, as in pytorch-fid. Each set needs at least 2 samples."""
    a = _as_2d_numpy(f1, "f1")
    b = _as_2d_numpy(f2, "f2")
    if a.shape[1] != b.shape[1]:
        raise WAEError(f"fid_from_features: dimension mismatch {a.shape[1]} vs {b.shape[1]}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise WAEError("fid_from_features needs at least 2 samples in each set")
    return frechet_distance(
        a.mean(0), np.cov(a, rowvar=False).reshape(a.shape[1], a.shape[1]),
        b.mean(0), np.cov(b, rowvar=False).reshape(b.shape[1], b.shape[1]),
    )


def _mmd2_unbiased_poly(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef0: float) -> float:
    """Unbiased MMD² with k(a, b) = (γ aᵀb + c)^degree (U-statistics within each set)."""
    m, n = x.shape[0], y.shape[0]
    kxx = (gamma * (x @ x.T) + coef0) ** degree
    kyy = (gamma * (y @ y.T) + coef0) ** degree
    kxy = (gamma * (x @ y.T) + coef0) ** degree
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid(
    f1: Any,
    f2: Any,
    subsets: int = 10,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel inception distance (Bińkowski et al., 2018): mean and std of the unbiased MMD² over subsets.

    Kernel k(x, y) = (γ xᵀy + coef0)^degree, by default (xᵀy / d + 1)³. For each of ``subsets`` rounds,
    ``subset_size`` points are drawn without replacement from each set (``np.random.default_rng(seed)``), and
    the unbiased MMD² (within-set sums exclude the diagonal) is computed. ``subset_size`` is clipped to each
    set's size separately (with a subset as large as a set, every round uses the whole set). The std is the
    population std (ddof = 0) of the per-subset values, as in the reference implementations; the unbiased
    estimate can be negative. Needs at least 2 points per set.
    """
    a = _as_2d_numpy(f1, "f1")
    b = _as_2d_numpy(f2, "f2")
    if a.shape[1] != b.shape[1]:
        raise WAEError(f"kid: dimension mismatch {a.shape[1]} vs {b.shape[1]}")
    if subsets < 1:
        raise WAEError(f"kid: subsets must be ≥ 1, got {subsets}")
    if subset_size < 2 or a.shape[0] < 2 or b.shape[0] < 2:
        raise WAEError("kid needs subset_size ≥ 2 and at least 2 samples in each set")
    if degree < 1:
        raise WAEError(f"kid: degree must be ≥ 1, got {degree}")
    g = 1.0 / a.shape[1] if gamma is None else float(gamma)
    mx = min(subset_size, a.shape[0])
    my = min(subset_size, b.shape[0])
    rng = np.random.default_rng(seed)
    vals = np.empty(subsets)
    for s in range(subsets):
        ix = rng.choice(a.shape[0], mx, replace=False)
        iy = rng.choice(b.shape[0], my, replace=False)
        vals[s] = _mmd2_unbiased_poly(a[ix], b[iy], degree, g, coef0)
    return float(vals.mean()), float(vals.std())


def _kth_nn_radii(f: Tensor, k: int, chunk_size: int) -> Tensor:
    """Squared distance from every row of f to its k-th nearest *other* row."""
    out = torch.empty(f.shape[0], dtype=f.dtype)
    for s in range(0, f.shape[0], chunk_size):
        d = pairwise_sq_dists(f[s: s + chunk_size], f)
        # the point itself is at distance 0 and comes first: the k-th neighbour is the (k+1)-th smallest
        out[s: s + chunk_size] = d.kthvalue(k + 1, dim=1).values
    return out


def _coverage(points: Tensor, centres: Tensor, radii: Tensor, chunk_size: int) -> float:
    """Fraction of ``points`` inside at least one ball (centre_j, radius_j) (squared radii)."""
    inside = 0
    for s in range(0, points.shape[0], chunk_size):
        d = pairwise_sq_dists(points[s: s + chunk_size], centres)
        inside += int((d <= radii.unsqueeze(0)).any(1).sum())
    return inside / points.shape[0]


def precision_recall(real: Any, fake: Any, k: int = 3, chunk_size: int = 1000) -> tuple[float, float]:
    """Improved precision and recall of a generative model (Kynkäänniemi et al., 2019).

    The manifold of a feature set is the union of balls around each of its points with radius the distance to the
    point's k-th nearest neighbour in the same set (k = 3 as in the paper). **Precision** is the fraction of
    ``fake`` features inside the manifold of ``real`` (sample fidelity); **recall** the fraction of ``real`` inside
    the manifold of ``fake`` (coverage of the data). A model that draws only a few, perfect kinds of samples has
    high precision and low recall; one that covers everything with blurry samples the opposite. Computed in float64
    in row chunks (O(chunk_size · n) memory). Needs more than ``k`` points per set.
    """
    a, b = _as_tensor(real), _as_tensor(fake)
    if a.dim() == 0 or b.dim() == 0:
        raise WAEError("precision_recall needs batches of vectors, got a scalar")
    a = a.reshape(a.shape[0], -1).to(torch.float64).cpu()
    b = b.reshape(b.shape[0], -1).to(torch.float64).cpu()
    if a.shape[1] != b.shape[1]:
        raise WAEError(f"precision_recall: dimension mismatch {a.shape[1]} vs {b.shape[1]}")
    if k < 1 or a.shape[0] <= k or b.shape[0] <= k:
        raise WAEError(f"precision_recall needs k ≥ 1 and more than k points per set (k = {k}, "
                       f"{a.shape[0]} real, {b.shape[0]} fake)")
    precision = _coverage(b, a, _kth_nn_radii(a, k, chunk_size), chunk_size)
    recall = _coverage(a, b, _kth_nn_radii(b, k, chunk_size), chunk_size)
    return precision, recall
