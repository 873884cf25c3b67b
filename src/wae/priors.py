"""Latent priors that behave like ``torch.distributions`` (``sample``/``rsample``/``log_prob``).

Priors are ``nn.Module`` s so that their parameters (means, scales) are buffers that follow the model to its
device and are saved with it. Two families are provided:

* :class:`GaussianPrior` — isotropic N(0, σ²I) (WAE, VAE, StackedWAE top layer, GMVAE's w).
* :class:`GaussianMixturePrior` — Σ_k p(k) N(μ_k, σ²I) with *mutually equidistant* means placed on an exact,
  centred regular simplex (GM-WAE, GM-VAE).

Both expose the same mixture view (``num_components``, ``component_means``, ``component_std``, ``weights``) so
that code which needs the prior (MMD, plots, samplers) never branches on the prior's type; a Gaussian is the
one-component mixture.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .registry import Registry

__all__ = ["Prior", "GaussianPrior", "GaussianMixturePrior", "simplex_means", "build_prior", "PRIORS"]


def simplex_means(num_components: int, dim: int, distance: float) -> Tensor:
    """Vertices of a centred regular simplex in R^dim with all pairwise distances equal to ``distance``.

    The K standard basis vectors of R^K are mutually at distance √2 and lie in the (K-1)-dimensional hyperplane
    orthogonal to the all-ones vector. We centre them, express them in an orthonormal basis of that hyperplane
    (K-1 coordinates), scale by ``distance / √2`` and pad with zeros up to ``dim``. Requires K ≤ dim + 1.
    Deterministic (float64 internally): the same K, dim, distance always give the same means.
    """
    k = int(num_components)
    if k < 1:
        raise ConfigError(f"number of mixture components must be >= 1, got {k}")
    if k > dim + 1:
        raise ConfigError(
            f"{k} mutually equidistant means need dim(z) >= K-1 = {k - 1}, got dim(z) = {dim}: "
            "raise latent_dim or lower num_components"
        )
    if k == 1:
        return torch.zeros(1, dim)
    eye = torch.eye(k, dtype=torch.float64)
    centred = eye - eye.mean(dim=0, keepdim=True)  # rows: centred vertices, rank K-1
    # Orthonormal basis of the hyperplane: right singular vectors with non-zero singular values.
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    basis = vh[: k - 1]  # (K-1, K)
    coords = centred @ basis.T  # (K, K-1), pairwise distances √2
    coords = coords * (distance / math.sqrt(2.0))
    out = torch.zeros(k, dim, dtype=torch.float64)
    out[:, : k - 1] = coords
    return out.to(torch.get_default_dtype())


class Prior(nn.Module):
    """A mixture of isotropic Gaussians Σ_k w_k N(μ_k, σ²I); the base of every prior here."""

    means: Tensor
    log_weights: Tensor

    def __init__(self, means: Tensor, std: float, weights: Tensor | None = None):
        super().__init__()
        if std <= 0 or not math.isfinite(std):
            raise ConfigError(f"prior standard deviation must be a positive number, got {std}")
        k = means.shape[0]
        if weights is None:
            weights = torch.full((k,), 1.0 / k)
        weights = torch.as_tensor(weights, dtype=torch.get_default_dtype())
        if weights.shape != (k,) or (weights < 0).any() or not torch.isclose(weights.sum(), torch.tensor(1.0)):
            raise ConfigError(f"mixture weights must be {k} non-negative numbers summing to 1")
        self.register_buffer("means", means.clone())
        self.register_buffer("log_weights", weights.log())
        self.std = float(std)

    # --- mixture view --------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def weights(self) -> Tensor:
        return self.log_weights.exp()

    @property
    def component_means(self) -> Tensor:
        return self.means

    @property
    def component_std(self) -> float:
        return self.std

    @property
    def event_shape(self) -> torch.Size:
        return torch.Size([self.dim])

    @property
    def mean(self) -> Tensor:
        return self.weights @ self.means

    @property
    def variance(self) -> Tensor:
        w = self.weights
        second = w @ (self.means**2) + self.std**2
        return second - self.mean**2

    def expected_sq_dist(self) -> float:
        """E‖z − z'‖² for independent z, z' from the prior: 2dσ² + Σ_kl w_k w_l ‖μ_k − μ_l‖²."""
        w = self.weights
        d2 = torch.cdist(self.means, self.means).pow(2)
        return float(2 * self.dim * self.std**2 + w @ d2 @ w)

    # --- torch.distributions-like API ------------------------------------------------------------------
    def _shape(self, sample_shape) -> torch.Size:
        if isinstance(sample_shape, int):
            sample_shape = (sample_shape,)
        return torch.Size(sample_shape)

    def sample_with_components(self, sample_shape=(), generator: torch.Generator | None = None):
        """Draw (z, k): k ~ Cat(w), z ~ N(μ_k, σ²I)."""
        shape = self._shape(sample_shape)
        n = int(math.prod(shape)) if len(shape) else 1
        if self.num_components == 1:
            k = torch.zeros(n, dtype=torch.long, device=self.means.device)
        else:
            k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, device=self.means.device, dtype=self.means.dtype, generator=generator)
        z = self.means[k] + self.std * eps
        return z.reshape(*shape, self.dim), k.reshape(shape)

    def rsample(self, sample_shape=(), generator: torch.Generator | None = None) -> Tensor:
        return self.sample_with_components(sample_shape, generator)[0]

    def sample(self, sample_shape=(), generator: torch.Generator | None = None) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape, generator)

    def sample_component(self, k: int, n: int, std_scale: float = 1.0, generator=None) -> Tensor:
        """n samples from component k, optionally with the standard deviation scaled (GM-WAE Fig. 2c uses ½)."""
        if not 0 <= k < self.num_components:
            raise ConfigError(f"component {k} out of range: the prior has {self.num_components} components")
        eps = torch.randn(n, self.dim, device=self.means.device, dtype=self.means.dtype, generator=generator)
        return self.means[k] + std_scale * self.std * eps

    def sample_stratified(self, per_component: int, generator=None) -> tuple[Tensor, Tensor, Tensor]:
        """``per_component`` samples from *every* component, for a low-variance mixture MMD.

        Returns (z, weights, groups) with z of shape (per_component·K, d) ordered group-major: group g holds one
        sample of each component, weight w_k / per_component. With these groups the weighted MMD of
        :func:`wae.divergences.mmd` is an unbiased estimate for the mixture (see its docstring).
        """
        m, k = int(per_component), self.num_components
        eps = torch.randn(m, k, self.dim, device=self.means.device, dtype=self.means.dtype, generator=generator)
        z = (self.means.unsqueeze(0) + self.std * eps).reshape(m * k, self.dim)
        weights = (self.weights / m).repeat(m)
        groups = torch.arange(m, device=z.device).repeat_interleave(k)
        return z, weights, groups

    def reference_sample(self, n: int) -> tuple[Tensor, Tensor | None, int | None]:
        """Prior samples to compare n codes with by the MMD: ``(z, weights, groups)``.

        A single Gaussian: n reparameterised draws (no weights, no groups). A mixture: ⌈n/K⌉ (at least 2) stratified
        draws per component (:meth:`sample_stratified`), groups of K consecutive samples (an int group size), weights
        w_k/m (two groups at least, so that the within-sample U-statistic has pairs)."""
        K = self.num_components
        if K == 1:
            return self.rsample((n,)), None, None
        m = max(2, math.ceil(n / K))
        z, w, _ = self.sample_stratified(m)
        return z, w, K

    def component_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; μ_k, σ²I) for every k: shape (..., K)."""
        d = self.dim
        sq = (z.unsqueeze(-2) - self.means).pow(2).sum(-1)
        return -0.5 * sq / self.std**2 - d * math.log(self.std) - 0.5 * d * math.log(2 * math.pi)

    def log_prob(self, z: Tensor) -> Tensor:
        return torch.logsumexp(self.component_log_prob(z) + self.log_weights, dim=-1)

    def posterior_components(self, z: Tensor) -> Tensor:
        """p(k | z) under the prior: shape (..., K)."""
        return torch.softmax(self.component_log_prob(z) + self.log_weights, dim=-1)

    def extra_repr(self) -> str:
        return f"K={self.num_components}, dim={self.dim}, std={self.std}"


class GaussianPrior(Prior):
    """Isotropic N(0, σ²I)."""

    def __init__(self, dim: int, std: float = 1.0):
        super().__init__(torch.zeros(1, dim), std)


class GaussianMixturePrior(Prior):
    """Σ_k w_k N(μ_k, σ²I), means on a centred regular simplex at pairwise distance ``separation · σ``.

    The GM-WAE paper (§3) uses K = 10, dim(z) = 10 and separation 4σ ("≈5% overlap").
    """

    def __init__(
        self,
        dim: int,
        num_components: int = 10,
        std: float = 1.0,
        separation: float = 4.0,
        weights: Tensor | None = None,
    ):
        if separation <= 0:
            raise ConfigError(f"prior separation must be positive, got {separation}")
        super().__init__(simplex_means(num_components, dim, separation * std), std, weights)
        self.separation = float(separation)


PRIORS: Registry[Callable[..., Prior]] = Registry("prior")
PRIORS.add("gaussian", lambda dim, std, num_components, separation: GaussianPrior(dim, std))
PRIORS.add("mixture", lambda dim, std, num_components, separation: GaussianMixturePrior(
    dim, num_components=num_components, std=std, separation=separation))


def build_prior(kind: str, dim: int, std: float = 1.0, num_components: int = 1, separation: float = 4.0) -> Prior:
    """Build a prior by name from :data:`PRIORS` (how every model builds its prior)."""
    return PRIORS.get(kind)(dim, std, num_components, separation)
