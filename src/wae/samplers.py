"""Samplers of a trained model's latent space: its own prior, or a Gaussian mixture fitted to its codes afterwards.

``prior`` draws from the model's generative model (``model.sample`` / ``model.sample_component``, which decode
``model.sample_codes``: the refitted components of a GM-WAE with ``component_refit``, as the estimator's ``sample``,
the galleries and the reports do). ``gmm`` is the
ex-post density estimation of Ghosh et al. (2020, "From variational to deterministic autoencoders", the RAE
paper; pythae ships it as ``GaussianMixtureSampler``): a Gaussian mixture with full covariances is fitted by EM
(scikit-learn) to the codes of the training data, and samples are decoded from draws of that mixture. It applies
to every model with a continuous latent and is the fair baseline for "samples of cluster k": a plain WAE whose
codes are clustered after training by a mixture, against GM-WAE's own components.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from .errors import ConfigError, WAEError
from .registry import Registry

__all__ = ["GaussianMixtureSampler", "SAMPLERS", "encode_all", "draw"]


class GaussianMixtureSampler(nn.Module):
    """Σ_k w_k N(μ_k, Σ_k) over codes (full covariances), with torch ``log_prob``/``sample``/``sample_component``."""

    def __init__(self, weights: Tensor, means: Tensor, covariances: Tensor):
        super().__init__()
        K, d = means.shape
        if weights.shape != (K,) or covariances.shape != (K, d, d):
            raise ConfigError(f"a Gaussian mixture needs weights (K,), means (K, d) and covariances (K, d, d); got "
                              f"{tuple(weights.shape)}, {tuple(means.shape)}, {tuple(covariances.shape)}")
        self.register_buffer("weights", weights / weights.sum())
        self.register_buffer("means", means.clone())
        self.register_buffer("scale_tril", torch.linalg.cholesky(covariances))

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @classmethod
    def fit(cls, codes: Tensor | np.ndarray, n_components: int = 10, seed: int = 0, max_iter: int = 500,
            reg_covar: float = 1e-6) -> "GaussianMixtureSampler":
        """Fit by EM (scikit-learn's ``GaussianMixture``, k-means initialisation, full covariances) to codes (N, d)."""
        from sklearn.mixture import GaussianMixture

        z = codes.detach().cpu().double().numpy() if isinstance(codes, Tensor) else np.asarray(codes, np.float64)
        if z.ndim != 2 or not np.isfinite(z).all():
            raise WAEError(f"the GMM sampler needs finite codes of shape (N, d), got {z.shape}")
        if not 1 <= n_components <= len(z):
            raise ConfigError(f"the GMM sampler needs 1 ≤ components ≤ the number of codes ({len(z)}), got "
                              f"{n_components}")
        gm = GaussianMixture(n_components, covariance_type="full", random_state=seed, max_iter=max_iter,
                             reg_covar=reg_covar).fit(z)
        t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
        return cls(t(gm.weights_), t(gm.means_), t(gm.covariances_))

    def component_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; μ_k, Σ_k) for every k: (N, K)."""
        z = z.to(self.means.dtype)
        diff = (z.unsqueeze(1) - self.means).unsqueeze(-1)  # (N, K, d, 1)
        sol = torch.linalg.solve_triangular(self.scale_tril.expand(z.shape[0], -1, -1, -1), diff, upper=False)
        maha = sol.squeeze(-1).pow(2).sum(-1)
        logdet = torch.log(torch.diagonal(self.scale_tril, dim1=-2, dim2=-1)).sum(-1)
        d = self.means.shape[1]
        return -0.5 * maha - logdet - 0.5 * d * math.log(2 * math.pi)

    def log_prob(self, z: Tensor) -> Tensor:
        """log Σ_k w_k N(z; μ_k, Σ_k) per code: (N,)."""
        return torch.logsumexp(self.component_log_prob(z) + self.weights.log(), dim=-1)

    def predict_proba(self, z: Tensor) -> Tensor:
        """p(k | z) under the mixture: (N, K)."""
        return torch.softmax(self.component_log_prob(z) + self.weights.log(), dim=-1)

    def sample_component(self, k: int, n: int, std_scale: float = 1.0, generator=None) -> Tensor:
        if not 0 <= k < self.num_components:
            raise ConfigError(f"component {k} out of range: the mixture has {self.num_components} components")
        eps = torch.randn(n, self.means.shape[1], dtype=self.means.dtype, generator=generator)
        return self.means[k] + std_scale * eps @ self.scale_tril[k].T

    def sample(self, n: int, std_scale: float = 1.0, generator=None) -> Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], dtype=self.means.dtype, generator=generator)
        return self.means[k] + std_scale * torch.einsum("nij,nj->ni", self.scale_tril[k], eps)


def encode_all(model, x: Tensor, batch_size: int = 500) -> Tensor:
    """The model's deterministic codes of x, in batches, without gradients (N, d)."""
    with torch.no_grad():
        return torch.cat([model.encode(x[i: i + batch_size]).flatten(1) for i in range(0, x.shape[0], batch_size)])


def _prior_draw(model, n: int, component: int | None, std_scale: float, generator, **_) -> Tensor:
    if component is not None:
        return model.sample_component(component, n, std_scale, generator=generator)
    if std_scale != 1.0:
        return model.decode(model.sample_codes(n, None, std_scale, generator))
    return model.sample(n, generator=generator)


def _gmm_draw(model, n: int, component: int | None, std_scale: float, generator, gmm: GaussianMixtureSampler,
              **_) -> Tensor:
    z = gmm.sample(n, std_scale, generator) if component is None else \
        gmm.sample_component(component, n, std_scale, generator)
    ref = next(model.parameters())
    return model.decode(z.to(ref.dtype))


SAMPLERS: Registry = Registry("sampler")
"""Name → ``draw(model, n, component, std_scale, generator, **state)`` returning decoded samples."""
SAMPLERS.add("prior", _prior_draw)
SAMPLERS.add("gmm", _gmm_draw)


def draw(name: str, model, n: int, component: int | None = None, std_scale: float = 1.0, generator=None,
         **state) -> Tensor:
    """n decoded samples of ``model`` from sampler ``name`` (``prior`` or ``gmm`` with ``gmm=`` a fitted
    :class:`GaussianMixtureSampler`), optionally of one component, without gradients."""
    with torch.no_grad():
        return SAMPLERS.get(name)(model, n, component, std_scale, generator, **state)
