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

from .data.source import apply_batched
from .errors import ConfigError, WAEError
from .registry import Registry

__all__ = ["GaussianMixtureSampler", "SAMPLERS", "encode_all", "draw", "check_sample_out", "write_samples"]


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
    return apply_batched(lambda b: model.encode(b).flatten(1), x, batch_size)


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


def check_sample_out(out, n: int) -> bool:
    """Refuse an ``out`` that is neither ``.png`` (an image grid, at most :data:`~wae.plots.MAX_GRID` images) nor
    ``.npz`` (the samples); True for ``.npz``."""
    from .plots import MAX_GRID

    to_npz = str(out).lower().endswith(".npz")
    if not to_npz and not str(out).lower().endswith(".png"):
        raise WAEError(f"--out {out}: the file name must end in .png (an image grid) or .npz (the samples)")
    if n > MAX_GRID and not to_npz:
        raise WAEError(f"--n {n}: a PNG grid holds at most {MAX_GRID:,} images; write the samples to an .npz "
                       f"file instead (--out samples.npz)")
    return to_npz


def write_samples(model, out, n: int, sampler: str = "prior", component: int | None = None, std_scale: float = 1.0,
                  seed: int = 0, train_x=None, gmm_components: int = 10, what: str = "the model") -> None:
    """``n`` samples of ``model`` from ``sampler`` (``gmm``: a Gaussian mixture of ``gmm_components`` fitted to the
    codes of ``train_x()``, the training examples) into ``out``: ``.npz`` (array ``x``), else a PNG — an image grid,
    or for vectors a scatter of their first two features. Drawn 1,000 at a time; refused in one line when they would
    not fit in memory or are not finite (nothing written)."""
    from .data.memory import format_bytes, max_array_bytes
    from .files import atomic_write_with
    from .plots import save_image_grid, scatter_2d

    to_npz = check_sample_out(out, n)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    state = {}
    if sampler == "gmm":
        state["gmm"] = GaussianMixtureSampler.fit(encode_all(model, train_x()), gmm_components, seed=seed)
    need = n * math.prod(model.data_shape) * 4
    if need > max_array_bytes():
        raise WAEError(f"--n {n}: the samples would take {format_bytes(need)}, more than the memory available; "
                       "draw fewer (several files with different --seed)")
    chunk = 1000  # bounded memory for any n
    try:
        with torch.no_grad():
            x = torch.cat([draw(sampler, model, min(chunk, n - i), component, std_scale, g, **state)
                           for i in range(0, n, chunk)])
    except (RuntimeError, ValueError) as e:  # e.g. a sampler refusing probabilities its weights made invalid
        raise WAEError(f"sampling from {what} failed ({str(e).strip().splitlines()[0][:160]})") from None
    if not bool(torch.isfinite(x).all()):
        raise WAEError(f"{what} produced non-finite samples (NaN or infinity); nothing written")
    if to_npz:
        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, x=x.numpy().astype(np.float32))
        atomic_write_with(out, write)
    elif not model.is_image:
        scatter_2d([(x.numpy()[:, :2], None, "samples")], out, f"{n} samples")
    else:
        save_image_grid(x, out, nrow=max(1, math.ceil(math.sqrt(n))))
