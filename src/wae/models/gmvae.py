"""GMVAE: the Gaussian mixture variational autoencoder (Dilokthanakul et al., 2016).

Notation follows the paper: y is the observed datum (the ``x`` argument of every method here), x is the
continuous latent of dimension N_x (``latent_dim``), w the latent of dimension N_w (``w_dim``) that generates
the mixture parameters, z the one-hot discrete latent with K components (``num_components``).

Generative model (Eq. 1)::

    w ~ N(0, I)                                        (1a)
    z ~ Mult(π),  π_k = 1/K                            (1b)
    x | z, w ~ N(μ_z(w; β), diag σ²_z(w; β))           (1c)  one net β returns all K means and variances at once
    y | x ~ B(μ(x; θ))  or  N(μ(x; θ), diag σ²(x; θ))  (1d)

Recognition model: q(x, w, z | y) = q(x|y) q(w|y) p_β(z|x, w) with Gaussian q(x|y), q(w|y) from one shared trunk
split into four output streams (Table A.1) and the z-posterior in closed form (Eq. 3)::

    p_β(z_j = 1 | x, w) = π_j N(x | μ_j(w), σ_j(w)) / Σ_k π_k N(x | μ_k(w), σ_k(w))

(a softmax over k of log π_k + log N(x | μ_k(w), σ_k(w)) here).

ELBO (Eq. 4), each term logged as a non-negative cost, with M Monte Carlo samples x⁽ʲ⁾ ~ q(x|y), w⁽ʲ⁾ ~ q(w|y)
(reparameterised, the same samples in every term)::

    recon_nll     = −(1/M) Σ_j log p_θ(y | x⁽ʲ⁾)
    cond_prior_kl = (1/M) Σ_j Σ_k p_β(z_k=1 | x⁽ʲ⁾, w⁽ʲ⁾) KL(q(x|y) ‖ p_β(x | w⁽ʲ⁾, z_k=1))      (Eq. 5)
    w_prior_kl    = KL(q(w|y) ‖ N(0, I))                                                     (analytic)
    z_prior_kl    = (1/M) Σ_j KL(p_β(z | x⁽ʲ⁾, w⁽ʲ⁾) ‖ p(z))                                  (−Eq. 6)
    loss          = recon_nll + cond_prior_kl + w_prior_kl + z_prior_term     (= −ELBO when the constraint is off)

The expectation over z is exact (one forward pass of β gives all K components), so nothing discrete is sampled;
K and M are batch dimensions of the same tensor ops — there is no Python loop over either.

Minimum-information constraint (Eq. 7, Kingma et al. 2016 "free bits"): the z-prior cost becomes
``z_prior_term = max(λ, z_prior_kl)`` (``min_info_lambda``): held at λ — zero gradient — until the KL exceeds the
threshold, the plain KL (same gradient) above it. With ``min_info_reduction = "batch"`` (default) λ is compared
with the minibatch mean of the KL, as in the authors' code (``zLoss / batch_size > lambda``); ``"example"`` applies
the max per data point, the literal reading of Eq. 7 for one datum. Both the raw KL (``z_prior_kl``) and the
constrained value (``z_prior_term``) are logged; ``elbo`` is always the unconstrained bound.

Choices where the paper is silent or ambiguous (documented here, configurable where it matters):

* ``cluster_probs`` (q(z|y) used for clustering) evaluates p_β(z | μ_x(y), μ_w(y)) at the *means* of q(x|y) and
  q(w|y) — deterministic, and what the authors' code does at test time (zero noise). ``cluster_samples = S > 0``
  averages p_β(z | x⁽ˢ⁾, w⁽ˢ⁾) over S posterior samples instead.
* "500*" of Tables A.1/A.3 is a fully connected layer with batch norm + ReLU (the authors' code writes it as a
  convolution whose kernel covers the whole feature map, which is the same map); the decoder's first transposed
  convolution maps the 1×1 "500*" features to the encoder's last feature-map size (9×9 for MNIST, 4×4 for SVHN),
  and its later layers mirror the encoder convolutions (Table A.3 lists each layer's *input* channels).
* Table A.1 prints 246 channels for the third SVHN convolution; we use 256 (= 4 × 64, the doubling pattern of
  the authors' ``nFilters·{1,2,4}``). ``channels: [64, 128, 246]`` restores the literal table.
* Synthetic nets have no batch norm (no asterisk in the tables); the synthetic decoder outputs a mean and a
  log-variance per coordinate ({2}_2 in Table A.3: ``likelihood: gaussian``, ``learn_obs_var: true``).
* ``posterior_grad = "authors_code"`` reproduces a detail of the authors' released code (github.com/Nat-D/GMVAE,
  main.lua): whenever the z-prior term is above λ it computes the gradient with respect to p_β(z|x,w) as
  −(∂cond/∂p + ∂H/∂p) instead of ∂cond/∂p − ∂H/∂p, i.e. the conditional-prior term's gradient through the
  z-posterior has its sign reversed (pushing mass towards poorly matching components). Off by default (the paper's
  ELBO); measured on mnist-5k in ``benchmarks/README.md``.
* ``usage_weight = γ > 0`` (beyond the paper, off by default) adds γ·KL(p̄ ‖ U(K)), p̄ the mean of p_β(z|x,w)
  over the batch (gathered across processes) and the M samples. The paper's z-prior term is per datum and is
  *smallest* for uncertain assignments; it says nothing about how often each component is used, which is how
  the ELBO on MNIST leaves components dead. ``usage_kl`` is logged either way.
* All log-variances (of q(x|y), q(w|y), p_β(x|w,z) and a learnt p_θ(y|x)) are clamped to [−12, 8], like the rest
  of the library.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..divergences import kl_categorical, kl_normal_normal, kl_normal_std
from ..errors import ConfigError
from ..likelihoods import LOG_2PI, LOGVAR_MAX, LOGVAR_MIN, bernoulli_log_likelihood, gaussian_log_likelihood
from ..networks import Unflatten, scaled
from ..priors import GaussianPrior
from .base import AutoEncoderModel, ConsistencyConfig, Objective
from .registry import register_model

__all__ = ["GMVAEConfig", "GMVAE", "ARCHITECTURES"]



@dataclass
class GMVAEConfig(ConsistencyConfig):
    latent_dim: int = 200
    """N_x, the dimension of the continuous latent x (Table A.1: 200 for MNIST/SVHN, 2 for the synthetic data)."""
    w_dim: int = 150
    """N_w, the dimension of w (Table A.1: 150 for MNIST/SVHN, 2 for the synthetic data)."""
    num_components: int = 10
    """K, the number of mixture components (values of the discrete latent z)."""
    mc_samples: int = 1
    """M, Monte Carlo samples of (x, w) per datum in Eq. 5 (paper: 1 or 10)."""
    architecture: str = "auto"
    """``synthetic`` (MLPs), ``mnist`` or ``svhn`` (Tables A.1–A.3); ``auto``: synthetic for vector data, svhn for
    images with 3 channels or at least 32×32 pixels, mnist otherwise."""
    width: float = 1.0
    """Multiplier of every hidden size and channel count (1.0 = the paper's)."""
    hidden: int | None = None
    """Hidden units of the fully connected layers before ``width`` (None: 120 synthetic, 500 mnist/svhn)."""
    channels: list[int] | None = None
    """Encoder conv channels before ``width`` (None: [16, 32, 64] mnist, [64, 128, 256] svhn)."""
    likelihood: str = "auto"
    """p_θ(y|x): ``bernoulli``, ``gaussian`` or ``auto`` (bernoulli for images, gaussian for vectors)."""
    obs_var: float = 1.0
    """Fixed variance of a gaussian likelihood (unused with ``learn_obs_var``)."""
    learn_obs_var: bool = False
    """Gaussian likelihood with a per-coordinate variance output by the decoder (synthetic data, Table A.3)."""
    min_info_lambda: float = 0.0
    """λ of the minimum-information constraint (Eq. 7), in nats; 0 = off (the paper's MNIST setting)."""
    min_info_reduction: str = "batch"
    """Where Eq. 7's max applies: ``batch`` (minibatch mean KL, the authors' code) or ``example`` (per datum)."""
    posterior_grad: str = "exact"
    """Gradient of the conditional-prior term (Eq. 5) through its weights p_β(z|x,w): ``exact`` (the ELBO's) or
    ``authors_code`` — its sign reversed whenever the z-prior term exceeds ``min_info_lambda``, as the authors'
    released code computes it (see the module docstring)."""
    usage_weight: float = 0.0
    """Beyond the paper (0 = off): weight γ of γ·KL(p̄ ‖ U(K)) added to the loss, p̄ the batch mean (over data, all
    processes, and M) of p_β(z|x,w) — a batch-level term that keeps components in use, unlike the per-datum z-prior."""
    cluster_samples: int = 0
    """q(z|y) for clustering: 0 = p_β(z | mean of q(x|y), mean of q(w|y)); S > 0 = average over S samples."""


ARCHITECTURES = ("auto", "synthetic", "mnist", "svhn")
LIKELIHOODS = ("auto", "bernoulli", "gaussian")
REDUCTIONS = ("batch", "example")
POSTERIOR_GRADS = ("exact", "authors_code")

# Encoder convolutions (kernel, stride, padding) of Table A.1; channel counts come from the config.
_CONV_SPECS: dict[str, list[tuple[int, int, int]]] = {
    "mnist": [(6, 1, 0), (6, 1, 0), (4, 2, 1)],
    "svhn": [(4, 2, 1), (4, 2, 1), (4, 2, 1)],
}
_DEFAULT_CHANNELS = {"mnist": [16, 32, 64], "svhn": [64, 128, 256]}
_DEFAULT_HIDDEN = {"synthetic": 120, "mnist": 500, "svhn": 500}


def _conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def _mlp_trunk(d_in: int, hidden: int) -> nn.Sequential:
    """Table A.1 synthetic: fc 120 ReLU 120 ReLU."""
    return nn.Sequential(nn.Flatten(), nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())


def _mlp_decoder(d_latent: int, hidden: int, out_shape: tuple[int, ...]) -> nn.Sequential:
    """Table A.3 synthetic: fc 120 ReLU 120 ReLU → outputs of ``out_shape``."""
    return nn.Sequential(nn.Linear(d_latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, math.prod(out_shape)), Unflatten(out_shape))


def _conv_trunk_and_decoder(arch: str, data_shape: tuple[int, ...], channels: list[int], hidden: int,
                            d_latent: int, out_channels: int) -> tuple[nn.Module, nn.Module]:
    """Tables A.1 and A.3 for images: BN+ReLU convolutions then fc ``hidden``*; the decoder mirrors them."""
    specs = _CONV_SPECS[arch]
    if len(channels) != len(specs):
        raise ConfigError(f"model.channels must list {len(specs)} channel counts for the {arch} architecture, "
                          f"got {len(channels)}")
    c, h, w = data_shape
    sizes = [(h, w)]
    enc: list[nn.Module] = []
    c_in = c
    for ch, (k, s, p) in zip(channels, specs):
        h2, w2 = _conv_out(sizes[-1][0], k, s, p), _conv_out(sizes[-1][1], k, s, p)
        if h2 < 1 or w2 < 1:
            raise ConfigError(f"images of {h}×{w} pixels are too small for the {arch} architecture; "
                              "use architecture: synthetic (MLPs) or larger images")
        sizes.append((h2, w2))
        enc += [nn.Conv2d(c_in, ch, k, s, p), nn.BatchNorm2d(ch), nn.ReLU()]
        c_in = ch
    fh, fw = sizes[-1]
    enc += [nn.Flatten(), nn.Linear(channels[-1] * fh * fw, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
    trunk = nn.Sequential(*enc)

    dec: list[nn.Module] = [nn.Linear(d_latent, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), Unflatten((hidden, 1, 1)),
                            nn.ConvTranspose2d(hidden, channels[-1], (fh, fw)), nn.BatchNorm2d(channels[-1]), nn.ReLU()]
    outs = [out_channels] + list(channels[:-1])  # output channels of the mirrored layers, first conv last
    for i in reversed(range(len(specs))):
        k, s, p = specs[i]
        (th, tw), (ih, iw) = sizes[i], sizes[i + 1]
        oph, opw = th - ((ih - 1) * s - 2 * p + k), tw - ((iw - 1) * s - 2 * p + k)
        dec.append(nn.ConvTranspose2d(channels[i], outs[i], k, s, p, output_padding=(oph, opw)))
        if i > 0:
            dec += [nn.BatchNorm2d(outs[i]), nn.ReLU()]
    return trunk, nn.Sequential(*dec)


@register_model("gmvae", GMVAEConfig, "GMVAE (Dilokthanakul et al.): GM prior generated from w, exact sum over z",
                "gmvae", "gmvae-mnist")
class GMVAE(AutoEncoderModel):
    """Gaussian mixture VAE with the ELBO of Eq. 4 and the optional minimum-information constraint of Eq. 7."""

    has_discrete_latent = True

    def __init__(self, config: GMVAEConfig, data_shape):
        super().__init__(config, data_shape)
        cfg = config
        self._validate(cfg)
        self.check_consistency_config()
        self.arch = self._resolve_architecture(cfg)
        self.likelihood = cfg.likelihood if cfg.likelihood != "auto" else ("bernoulli" if self.is_image else "gaussian")
        if cfg.learn_obs_var and self.likelihood != "gaussian":
            raise ConfigError("model.learn_obs_var needs likelihood: gaussian")
        K, dx, dw = cfg.num_components, cfg.latent_dim, cfg.w_dim
        hidden = scaled([cfg.hidden if cfg.hidden is not None else _DEFAULT_HIDDEN[self.arch]], cfg.width)[0]
        n_out = 2 if cfg.learn_obs_var else 1  # decoder streams: mean (+ log-variance)

        # q(x|y), q(w|y): a shared trunk and four output streams (one Linear, split) — Table A.1.
        if self.arch == "synthetic":
            self.trunk = _mlp_trunk(math.prod(self.data_shape), hidden)
            out_shape = (n_out * self.data_shape[0], *self.data_shape[1:])
            self.decoder = _mlp_decoder(dx, hidden, out_shape)
        else:
            chans = scaled(cfg.channels if cfg.channels is not None else _DEFAULT_CHANNELS[self.arch], cfg.width)
            self.trunk, self.decoder = _conv_trunk_and_decoder(self.arch, self.data_shape, chans, hidden, dx,
                                                               n_out * self.data_shape[0])
        self.heads = nn.Linear(hidden, 2 * dw + 2 * dx)
        # p_β(x|w, z): fc Tanh, then 2K output streams of size N_x in one Linear — Table A.2.
        self.prior_net = nn.Sequential(nn.Linear(dw, hidden), nn.Tanh(), nn.Linear(hidden, 2 * K * dx))
        self.register_buffer("log_pi", torch.full((K,), -math.log(K)))
        # The continuous prior the library's MMD compares posterior samples with is p(w) = N(0, I).
        self.prior = GaussianPrior(dw)
        self.kernel = self.build_kernel("imq", "auto", None)

    # --- configuration ----------------------------------------------------------------------------------------
    @staticmethod
    def _validate(cfg: GMVAEConfig) -> None:
        checks = [
            (cfg.latent_dim >= 1, f"model.latent_dim must be >= 1, got {cfg.latent_dim}"),
            (cfg.w_dim >= 1, f"model.w_dim must be >= 1, got {cfg.w_dim}"),
            (cfg.num_components >= 1, f"model.num_components must be >= 1, got {cfg.num_components}"),
            (cfg.mc_samples >= 1, f"model.mc_samples must be >= 1, got {cfg.mc_samples}"),
            (cfg.architecture in ARCHITECTURES,
             f"model.architecture must be one of {', '.join(ARCHITECTURES)}, got {cfg.architecture!r}"),
            (cfg.width > 0 and math.isfinite(cfg.width), f"model.width must be a positive number, got {cfg.width}"),
            (cfg.hidden is None or cfg.hidden >= 1, f"model.hidden must be >= 1, got {cfg.hidden}"),
            (cfg.channels is None or all(c >= 1 for c in cfg.channels),
             f"model.channels must be positive integers, got {cfg.channels}"),
            (cfg.likelihood in LIKELIHOODS,
             f"model.likelihood must be one of {', '.join(LIKELIHOODS)}, got {cfg.likelihood!r}"),
            (cfg.obs_var > 0 and math.isfinite(cfg.obs_var), f"model.obs_var must be positive, got {cfg.obs_var}"),
            (cfg.min_info_lambda >= 0 and math.isfinite(cfg.min_info_lambda),
             f"model.min_info_lambda must be >= 0 (0 = off), got {cfg.min_info_lambda}"),
            (cfg.posterior_grad in POSTERIOR_GRADS,
             f"model.posterior_grad must be one of {', '.join(POSTERIOR_GRADS)}, got {cfg.posterior_grad!r}"),
            (cfg.min_info_reduction in REDUCTIONS,
             f"model.min_info_reduction must be one of {', '.join(REDUCTIONS)}, got {cfg.min_info_reduction!r}"),
            (cfg.cluster_samples >= 0, f"model.cluster_samples must be >= 0, got {cfg.cluster_samples}"),
            (cfg.usage_weight >= 0 and math.isfinite(cfg.usage_weight),
             f"model.usage_weight must be >= 0 (0 = off), got {cfg.usage_weight}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        if cfg.min_info_lambda > 0 and cfg.min_info_lambda >= math.log(cfg.num_components):
            raise ConfigError(f"model.min_info_lambda = {cfg.min_info_lambda} can never be exceeded: "
                              f"KL(p(z|x,w) ‖ uniform) <= log K = {math.log(cfg.num_components):.4g}")

    def _resolve_architecture(self, cfg: GMVAEConfig) -> str:
        arch = cfg.architecture
        if arch == "auto":
            if not self.is_image:
                return "synthetic"
            c, h, w = self.data_shape
            return "svhn" if c == 3 or min(h, w) >= 32 else "mnist"
        if arch != "synthetic" and not self.is_image:
            raise ConfigError(f"model.architecture {arch!r} needs image data (C×H×W); "
                              f"got per-example shape {self.data_shape}: use synthetic")
        return arch

    @property
    def num_components(self) -> int:
        return self.config.num_components

    def _ref(self) -> Tensor:
        return self.log_pi

    # --- recognition model --------------------------------------------------------------------------------------
    def q_params(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(μ_x, log σ²_x, μ_w, log σ²_w) of q(x|y) and q(w|y): the four output streams of Table A.1."""
        dx, dw = self.config.latent_dim, self.config.w_dim
        mu_w, lv_w, mu_x, lv_x = self.heads(self.trunk(x)).split([dw, dw, dx, dx], dim=-1)
        return mu_x, lv_x.clamp(LOGVAR_MIN, LOGVAR_MAX), mu_w, lv_w.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def mixture_params(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """μ_k(w; β), log σ²_k(w; β) for all k in one forward pass: w (..., N_w) → two (..., K, N_x)."""
        K, dx = self.config.num_components, self.config.latent_dim
        out = self.prior_net(w.reshape(-1, w.shape[-1])).view(*w.shape[:-1], 2, K, dx)
        return out[..., 0, :, :], out[..., 1, :, :].clamp(LOGVAR_MIN, LOGVAR_MAX)

    def component_log_density(self, x: Tensor, mu_k: Tensor, logvar_k: Tensor) -> Tensor:
        """log N(x | μ_k, diag σ²_k) for every k: x (..., N_x), μ_k/log σ²_k (..., K, N_x) → (..., K)."""
        x = x.unsqueeze(-2)
        return -0.5 * (LOG_2PI + logvar_k + (x - mu_k).pow(2) * torch.exp(-logvar_k)).sum(-1)

    def z_posterior_log(self, x: Tensor, w: Tensor) -> Tensor:
        """log p_β(z | x, w) of Eq. 3: x (..., N_x), w (..., N_w) → (..., K)."""
        mu_k, lv_k = self.mixture_params(w)
        return torch.log_softmax(self.log_pi + self.component_log_density(x, mu_k, lv_k), dim=-1)

    def z_posterior(self, x: Tensor, w: Tensor) -> Tensor:
        """p_β(z | x, w) of Eq. 3 (probabilities over the last dimension, K)."""
        return self.z_posterior_log(x, w).exp()

    def _cluster_log_probs(self, x: Tensor) -> Tensor:
        """log p_β(z | μ_x(y), μ_w(y)): the deterministic q(z|y) of ``cluster_probs`` (in log space)."""
        mu_x, _, mu_w, _ = self.q_params(x)
        return self.z_posterior_log(mu_x, mu_w)

    def cluster_probs(self, x: Tensor) -> Tensor:
        """q(z|y) ≈ p_β(z | μ_x(y), μ_w(y)) (deterministic), or its average over ``cluster_samples`` draws."""
        S = self.config.cluster_samples
        if S == 0:
            return self._cluster_log_probs(x).exp()
        mu_x, lv_x, mu_w, lv_w = self.q_params(x)
        xs = mu_x + (0.5 * lv_x).exp() * torch.randn(S, *mu_x.shape, device=mu_x.device, dtype=mu_x.dtype)
        ws = mu_w + (0.5 * lv_w).exp() * torch.randn(S, *mu_w.shape, device=mu_w.device, dtype=mu_w.dtype)
        return self.z_posterior(xs, ws).mean(0)

    def encode(self, x: Tensor) -> Tensor:
        """The mean of q(x|y)."""
        return self.q_params(x)[0]

    def posterior_samples(self, x: Tensor) -> tuple[Tensor, None, None]:
        """One sample of q(w|y) per datum, for MMD against p(w) = N(0, I) (``self.prior``)."""
        _, _, mu_w, lv_w = self.q_params(x)
        return mu_w + (0.5 * lv_w).exp() * torch.randn_like(mu_w), None, None

    # --- observation model --------------------------------------------------------------------------------------
    def _split_decoder(self, out: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.config.learn_obs_var:
            logits, logvar = out.chunk(2, dim=1)
            return logits, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)
        return out, None

    def _mean(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits) if self.likelihood == "bernoulli" else self.output(logits)

    def decode(self, z: Tensor) -> Tensor:
        """The mean of p_θ(y | x) for continuous latents x = ``z`` (N, N_x)."""
        return self._mean(self._split_decoder(self.decoder(z))[0])

    def log_likelihood(self, out: Tensor, y: Tensor) -> Tensor:
        """log p_θ(y | x) per example from the decoder output ``out`` (summed over all coordinates)."""
        logits, logvar = self._split_decoder(out)
        if self.likelihood == "bernoulli":
            return bernoulli_log_likelihood(logits, y)
        return gaussian_log_likelihood(self.output(logits), y,
                                       logvar if logvar is not None else math.log(self.config.obs_var))

    # --- the bound ----------------------------------------------------------------------------------------------
    def elbo_terms(self, x: Tensor, eps_x: Tensor | None = None, eps_w: Tensor | None = None) -> dict[str, Tensor]:
        """Per-example terms of Eq. 4 (each (N,), as costs) with M = ``mc_samples`` samples.

        ``eps_x`` (M, N, N_x) and ``eps_w`` (M, N, N_w) fix the reparameterisation noise (tests); by default it is
        drawn fresh. Also returns the samples and the z-posterior under keys starting with ``_``.
        """
        M, n = self.config.mc_samples, x.shape[0]
        mu_x, lv_x, mu_w, lv_w = self.q_params(x)
        if eps_x is None:
            eps_x = torch.randn(M, *mu_x.shape, device=mu_x.device, dtype=mu_x.dtype)
        M = eps_x.shape[0]
        if eps_w is None:
            eps_w = torch.randn(M, *mu_w.shape, device=mu_w.device, dtype=mu_w.dtype)
        xs = mu_x + (0.5 * lv_x).exp() * eps_x  # (M, N, N_x)
        ws = mu_w + (0.5 * lv_w).exp() * eps_w  # (M, N, N_w)
        mu_k, lv_k = self.mixture_params(ws)  # (M, N, K, N_x): one pass of β for all K and M
        log_pz = torch.log_softmax(self.log_pi + self.component_log_density(xs, mu_k, lv_k), dim=-1)  # Eq. 3
        pz = log_pz.exp()  # (M, N, K)
        # Reconstruction: all M·N samples decoded in one batch.
        out = self.decoder(xs.reshape(M * n, -1))
        y = x.unsqueeze(0).expand(M, *x.shape).reshape(M * n, *x.shape[1:])
        recon = -self.log_likelihood(out, y).view(M, n).mean(0)
        # Conditional prior (Eq. 5): exact expectation over z, Monte Carlo over (x, w).
        kl_k = kl_normal_normal(mu_x.unsqueeze(-2), lv_x.unsqueeze(-2), mu_k, lv_k)  # (M, N, K)
        cond = (pz * kl_k).sum(-1).mean(0)
        w_kl = kl_normal_std(mu_w, lv_w)
        z_kl = (pz * (log_pz - self.log_pi)).sum(-1).mean(0)  # KL(p_β(z|x,w) ‖ U(K)), averaged over M
        return {"recon_nll": recon, "cond_prior_kl": cond, "w_prior_kl": w_kl, "z_prior_kl": z_kl,
                "_mu_x": mu_x, "_mu_w": mu_w, "_x": xs, "_w": ws, "_pz": pz, "_mu_k": mu_k, "_logvar_k": lv_k, "_kl_k": kl_k}

    def constrained_z_term(self, z_kl: Tensor) -> Tensor:
        """Eq. 7: max(λ, KL_z) — constant λ (zero gradient) below the threshold; 0 = off → mean KL."""
        lam = self.config.min_info_lambda
        if lam <= 0:
            return z_kl.mean()
        if self.config.min_info_reduction == "example":
            return z_kl.clamp_min(lam).mean()
        return z_kl.mean().clamp_min(lam)

    def objective(self, x: Tensor, eps_x: Tensor | None = None, eps_w: Tensor | None = None,
                  targets: Tensor | None = None) -> Objective:
        t = self.elbo_terms(x, eps_x, eps_w)
        recon, cond, w_kl, z_kl = (t[k].mean() for k in ("recon_nll", "cond_prior_kl", "w_prior_kl", "z_prior_kl"))
        z_term = self.constrained_z_term(t["z_prior_kl"])
        cond_loss = cond
        if self.config.posterior_grad == "authors_code":
            # Same value; gradient w.r.t. p_β(z|x,w) reversed while the z-prior term is above λ (a tensor
            # condition: no host synchronisation).
            pz = t["_pz"]
            flip = t["z_prior_kl"].mean() > self.config.min_info_lambda
            pz_c = torch.where(flip, 2.0 * pz.detach() - pz, pz)
            cond_loss = (pz_c * t["_kl_k"]).sum(-1).mean(0).mean()
        obj = Objective(paper=recon + cond_loss + w_kl + z_term, elbo=-(recon + cond + w_kl + z_kl),
                        terms={"recon_nll": recon, "cond_prior_kl": cond, "w_prior_kl": w_kl, "z_prior_kl": z_kl,
                               "z_prior_term": z_term})
        pbar = self.gather(t["_pz"].mean(0)).mean(0)  # (K,): the batch's marginal of p_β(z|x,w)
        obj.extras["usage_kl"] = (self.config.usage_weight, kl_categorical(pbar, self.log_pi))
        if (self.config.consistency.weight or self.config.pseudo_label_weight and targets is not None) and self.training:
            # q(z|y) as clustering reads it: p_β(z | means of q(x|y), q(w|y)), clean (fixed) vs warped
            log_q = self.z_posterior_log(t["_mu_x"], t["_mu_w"])
            self.add_consistency(obj, log_q, x, self._cluster_log_probs)
            self.add_pseudo_labels(obj, log_q, targets)
        return obj

    def eval_metrics(self, x: Tensor) -> dict[str, Tensor]:
        """The (unconstrained) ELBO and its four terms, batch means."""
        t = self.elbo_terms(x)
        terms = {k: t[k].mean() for k in ("recon_nll", "cond_prior_kl", "w_prior_kl", "z_prior_kl")}
        return {"elbo": -sum(terms.values()), **terms}

    # --- generation ---------------------------------------------------------------------------------------------
    def _sample_x(self, w: Tensor, k: Tensor, std_scale: float = 1.0, generator=None) -> Tensor:
        """x ~ N(μ_k(w), std_scale²·σ²_k(w)) for per-row components k (N,) — gathered, no loop over K."""
        mu_k, lv_k = self.mixture_params(w)  # (N, K, N_x)
        idx = k.view(-1, 1, 1).expand(-1, 1, mu_k.shape[-1])
        mu, lv = mu_k.gather(1, idx).squeeze(1), lv_k.gather(1, idx).squeeze(1)
        eps = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
        return mu + std_scale * (0.5 * lv).exp() * eps

    def _randn_w(self, n: int, generator=None) -> Tensor:
        ref = self._ref()
        return torch.randn(n, self.config.w_dim, device=ref.device, dtype=ref.dtype, generator=generator)

    def sample_codes(self, n: int, component: int | None = None, std_scale: float = 1.0,
                     generator: torch.Generator | None = None) -> Tensor:
        """Continuous latents x of ancestral sampling: w ~ N(0, I), z ~ U(K) (or z = ``component``),
        x ~ N(μ_z(w), std_scale²·σ²_z(w)) — what :meth:`sample` and :meth:`sample_component` decode."""
        w = self._randn_w(n, generator)
        if component is None:
            k = torch.randint(self.num_components, (n,), device=w.device, generator=generator)
        else:
            self._check_component(component)
            k = torch.full((n,), component, dtype=torch.long, device=w.device)
        return self._sample_x(w, k, std_scale, generator)

    def component_mode(self, k: int) -> Tensor:
        """μ_k(w = 0): the code of component k's decoded mean (:meth:`sample_component_mean`)."""
        self._check_component(k)
        return self.mixture_params(self._ref().new_zeros(1, self.config.w_dim))[0][:, k]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral sampling: w ~ N(0, I), z ~ U(K), x ~ N(μ_z(w), σ²_z(w)), then the decoder's mean."""
        return self.decode(self.sample_codes(n, None, 1.0, generator))

    def _check_component(self, k: int) -> None:
        if not 0 <= k < self.num_components:
            raise ConfigError(f"component {k} out of range: the model has {self.num_components} components")

    def sample_component(self, k: int, n: int, std_scale: float = 1.0, generator=None,
                         w_zero: bool = False) -> Tensor:
        """n samples with z = k: w ~ N(0, I) (or w = 0 with ``w_zero``, Fig. 5a), x ~ N(μ_k(w), std_scale²σ²_k(w))."""
        if not w_zero:
            return self.decode(self.sample_codes(n, k, std_scale, generator))
        self._check_component(k)
        w = torch.zeros_like(self._randn_w(n, generator))  # the same draws as without w_zero, then w = 0
        kk = torch.full((n,), k, dtype=torch.long, device=w.device)
        return self.decode(self._sample_x(w, kk, std_scale, generator))

    def sample_component_mean(self, k: int, w: Tensor | None = None) -> Tensor:
        """The decoded component mean μ_k(w) (no sampling noise); w (n, N_w), default a single w = 0."""
        self._check_component(k)
        if w is None:
            w = self._ref().new_zeros(1, self.config.w_dim)
        return self.decode(self.mixture_params(w)[0][:, k])

    def traverse_w(self, k: int, n: int = 10, dims: tuple[int, ...] = (0, 1), span: float = 2.0,
                   std_scale: float = 0.0, generator=None) -> Tensor:
        """Fig. 5b: decode z = k while w moves on a grid over ``dims`` (each in [−span, span], other coords 0).

        Returns n^len(dims) images in row-major grid order (the last listed dim varies fastest). ``std_scale`` = 0
        decodes the component means μ_k(w); > 0 adds x-noise scaled by it.
        """
        self._check_component(k)
        if n < 1 or not dims or any(not 0 <= d < self.config.w_dim for d in dims):
            raise ConfigError(f"traverse_w needs n >= 1 and dims in [0, {self.config.w_dim}), got n={n}, dims={dims}")
        ref = self._ref()
        line = torch.linspace(-span, span, n, device=ref.device, dtype=ref.dtype)
        grid = torch.stack(torch.meshgrid(*([line] * len(dims)), indexing="ij"), -1).reshape(-1, len(dims))
        w = torch.zeros(grid.shape[0], self.config.w_dim, device=ref.device, dtype=ref.dtype)
        w[:, list(dims)] = grid
        kk = torch.full((w.shape[0],), k, dtype=torch.long, device=w.device)
        return self.decode(self._sample_x(w, kk, std_scale, generator))
