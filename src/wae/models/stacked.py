"""StackedWAE: deep latent hierarchies trained by stacking Wasserstein autoencoders (Gaujac et al.).

Generative model (Eq. 1), N latent layers, z_0 = x::

    p(z_N) = N(0, I),   p_θi(z_{i−1} | z_i) = N(μ_i^p(z_i), diag Σ_i^p(z_i))  (i = 2 … N),   x = f_θ1(z_1)

Markov Gaussian inference model (Eq. 2): q_φi(z_i | z_{i−1}) = N(μ_i^q(z_{i−1}), diag Σ_i^q(z_{i−1})), i = 1 … N.
Every mean and covariance function is its own network (Appendix B.1: "the mean and diagonal covariance
functions μ_i, Σ_i are fully-connected networks"; ``shared_trunk: true`` shares the hidden layers instead);
the networks output log-variances, clamped to [−12, 8] like the rest of the library.

``stacked-wae`` minimises Eq. 10 with squared Euclidean costs, one reparameterised chain
z_1 ~ q(z_1|x), z_{n+1} ~ q(z_{n+1}|z_n) per example::

    loss = Σ_{n=0}^{N−1} w_n · cost_n  +  w_N · MMD(q_N^agg, N(0, I))  +  L_pen
    cost_0 = ‖x − f(z_1)‖²                                  (deterministic bottom decoder)
    cost_n = E_{z̃ ~ p(z̃_n|z_{n+1})} ‖z_n − z̃‖² = ‖z_n − μ_{n+1}^p(z_{n+1})‖² + tr Σ_{n+1}^p(z_{n+1})   (n ≥ 1)
    L_pen  = Σ_i λ_i^Σ Σ_m |log Σ_i^q[m]|                  (Eq. 12, per example, averaged over the batch)

w_n = Π_{i≤n} λ_i (:func:`layer_weights`, Appendix B). The expectation over z̃_n is taken in closed form
(``cost_expectation: analytic``, the paper's "analytically whenever possible") or by ``mc_samples`` draws
(``mc``); the expectations over the encoded chain are Monte Carlo (one chain per example). Each cost is logged
*unweighted* as ``cost0`` (pixels) … ``cost{N−1}``, the λ-free MMD as ``mmd`` and the weighted Eq. 12 sum as
``logvar_penalty``.

``wae-deep`` trains the same networks with the standard WAE objective (Eq. 7, the ablation of §3.1)::

    loss = cost_0 + lam · MMD(q_1^agg(z_1), p_Θ2:N(z_1))  (+ L_pen)

with samples of the implicit prior p_Θ2:N(z_1) drawn ancestrally through the generative layers,
reparameterised, so the prior networks θ_2 … θ_N learn through them; logged as ``cost0``, ``mmd_z1``.

Random draws of :meth:`StackedWAE.loss`, in order (tests replay them): the encoder noise of layers 1 … N (one
``randn_like`` each), then for ``mc`` the z̃ noise of layers n = 1 … N−1 (shape S × B × d_n each), then the prior
sample of the MMD. ``wae-deep`` draws the encoder noise of layers 1 … N, then z_N ~ N(0, I) and the noise of the
generative layers N … 2.

Architectures (``architecture``):

* ``mlp`` (Appendix B.1, MNIST): every μ and Σ network of layer i (q_i: z_{i−1} → z_i and p_i: z_i → z_{i−1},
  f_θ1 counted as μ_1^p) has ``hidden_layers`` = 2 same-size fully connected hidden layers of
  ``hidden_units[i−1]`` units, batch norm then ReLU after each.
* ``resnet`` (Appendix B.2, SVHN, Fig. 6): each network is a 3-layer residual net — two convolutional blocks
  (conv + BN + ReLU, ``hidden_units[i−1]`` filters), a resampling convolution, a residual connection, BN + ReLU
  after the sum, and a last convolution to the output feature maps. Latent i is the flat vector of a
  ``latent_channels[i−1]`` × H_i × W_i map with H_i = W_i = √(d_i / C_i); a layer resamples (stride 2) when its
  map is half the size of the one below. Inference nets resample with stride-2 convolutions that double the
  filters, generative nets with stride-2 transposed convolutions that halve them.
* ``auto``: ``mlp`` for vector data and single-channel images, ``resnet`` for multi-channel images.

Choices where the paper is silent (Fig. 6b's table is not in the text we have):

* ResNet kernels: 3×3 (``conv_kernel``) for the blocks and the last convolution, 4×4 with padding 1 for the
  stride-2 (transposed) convolutions, which halve/double a map exactly. The residual connection starts after the
  first block (whose output already has the block width) so that "the skip connection performs the identity
  operation" when nothing is resampled; when resampling it is a stride-2 (transposed) convolution.
* B.2 prints both "number of features 1, 2, 4, 2, 1, 1" and the shape 2×2×2 for the last layer; the preset
  follows the shapes of §3.2 (16×16×1, 8×8×2, 4×4×4, 4×4×2, 4×4×1, 2×2×2).
* ``wae-deep``: the paper does not print λ_1 of the ablation; ``lam`` defaults to 10 (Tolstikhin et al.'s λ).
  The MMD kernel at z_1 is the IMQ sum with base 2·d_1 even though p_Θ2:N(z_1) is not N(0, I).
* ``latent_dim`` mirrors ``latent_dims[-1]`` (the top layer, the one :meth:`encode`/``sample`` use).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..divergences import Kernel, build_kernel, mmd
from ..errors import ConfigError
from ..likelihoods import LOGVAR_MAX, LOGVAR_MIN
from ..networks import Unflatten, scaled
from ..priors import build_prior
from .base import AutoEncoderModel, Objective, squared_l2
from .registry import register_model

__all__ = ["StackedWAEConfig", "WAEDeepConfig", "StackedWAE", "layer_weights", "sweep_grid", "ARCHITECTURES"]

ARCHITECTURES = ("auto", "mlp", "resnet")
OBJECTIVES = ("stacked", "wae")
WEIGHT_SCHEDULES = ("mnist", "svhn")
EXPECTATIONS = ("analytic", "mc")
GEN_VARIANCES = ("cost", "fit")
PAPER_MNIST_DIMS = (32, 16, 8, 4, 2)


@dataclass
class StackedWAEConfig(ModelConfig):
    latent_dim: int = 2
    """Mirrors ``latent_dims[-1]`` (set automatically; change ``latent_dims``)."""
    latent_dims: list[int] = field(default_factory=lambda: [32, 16, 8, 4, 2])
    """d_{Z_1} … d_{Z_N}, bottom to top (B.1: 32/16/8/4/2; B.2: 256/128/64/32/16/8)."""
    hidden_units: list[int] = field(default_factory=lambda: [2048, 1024, 512, 256, 128])
    """Per layer i: hidden units of the mlp nets, or conv filters of the resnet nets (before ``width``)."""
    hidden_layers: int = 2
    """Hidden layers of every mlp net (B.1: 2)."""
    architecture: str = "auto"
    """``mlp`` (B.1), ``resnet`` (B.2) or ``auto`` (mlp for vectors and 1-channel images, else resnet)."""
    latent_channels: list[int] = field(default_factory=list)
    """resnet only: feature maps C_i of each latent (B.2: 1, 2, 4, 2, 1, 2); H_i = W_i = √(d_i / C_i)."""
    conv_kernel: int = 3
    """resnet: kernel of the convolutional blocks and of the last convolution (odd)."""
    width: float = 1.0
    """Multiplier of every hidden size / filter count (1.0 = the paper's)."""
    batch_norm: bool = True
    shared_trunk: bool = False
    """True: μ and Σ of a layer share their hidden layers (two output heads) instead of two networks."""
    objective: str = "stacked"
    """``stacked`` (Eq. 10) or ``wae`` (Eq. 7, the §3.1 ablation)."""
    lambda_rec: float = 0.05
    lambda_match: float = 1.0e-4
    weight_schedule: str = "mnist"
    """How (λ_rec, λ_match) give Π_{i≤n} λ_i: ``mnist`` (B.1: λ_rec^n / d_n) or ``svhn`` (B.2: λ_rec^((n+1)/2))."""
    logvar_penalty: list[float] = field(default_factory=list)
    """λ_i^Σ of Eq. 12, one per layer; empty = no penalty (B.1). B.2: 10^−(2+i)."""
    cost_expectation: str = "analytic"
    """E over z̃_n ~ p(z̃_n|z_{n+1}) in Eq. 10: ``analytic`` (‖z − μ‖² + tr Σ) or ``mc`` (``mc_samples`` draws)."""
    mc_samples: int = 1
    gen_variance: str = "cost"
    """How the generative covariances Σ_i^p of p(z_{i−1}|z_i) learn (objective ``stacked``). ``cost``: from Eq. 10
    alone, as in the paper; its expectation ‖z − μ‖² + tr Σ is smallest at Σ = 0, so Σ^p collapses and samples
    become a function of z_N. ``fit`` (beyond the paper): Σ^p is fitted by the Gaussian likelihood of the encoded
    z_{i−1} around the stop-gradient mean μ^p(z_i) (term ``gen_nll``, which trains only the Σ^p nets), and enters
    Eq. 10 with a stop-gradient: Eq. 10's value is unchanged, and tr Σ^p no longer pulls Σ^p (nor, through
    z_i, the encoders) towards 0."""
    lam: float = 10.0
    """λ_1 of Eq. 7 (objective ``wae`` only)."""

    def __post_init__(self):
        if self.latent_dims:
            self.latent_dim = int(self.latent_dims[-1])


@dataclass
class WAEDeepConfig(StackedWAEConfig):
    objective: str = "wae"


def layer_weights(lambda_rec: float, lambda_match: float, N: int, latent_dims: list[int] | None = None,
                  schedule: str = "mnist") -> list[float]:
    """The products w_n = Π_{i=1}^n λ_i of Eq. 10 for n = 0 … N (N + 1 numbers; w_0 = 1, the empty product).

    * ``mnist`` (Appendix B.1): w_n = λ_rec^n / d_{Z_n} for n = 1 … N−1, w_N = λ_match. ``latent_dims``
      gives d_{Z_1} … d_{Z_N}; when omitted, N must be 5 and the paper's 32/16/8/4/2 are used.
    * ``svhn`` (Appendix B.2): w_p = λ_rec^((p−1)/2 + 1) for p = 1 … N−1, w_N = λ_match.

    E.g. B.1's best pair (0.05, 1e-4): [1, 0.05/32, 0.05²/16, 0.05³/8, 0.05⁴/4, 1e-4].
    """
    N = int(N)
    if N < 1:
        raise ConfigError(f"a stacked WAE needs at least one latent layer, got N = {N}")
    if schedule == "mnist":
        if latent_dims is None:
            if N != len(PAPER_MNIST_DIMS):
                raise ConfigError(f"layer_weights: the mnist schedule divides by d_n: pass latent_dims for N = {N}")
            latent_dims = list(PAPER_MNIST_DIMS)
        if len(latent_dims) != N:
            raise ConfigError(f"layer_weights: {len(latent_dims)} latent dims for N = {N} layers")
        rec = [lambda_rec**n / latent_dims[n - 1] for n in range(1, N)]
    elif schedule == "svhn":
        rec = [lambda_rec ** ((p - 1) / 2 + 1) for p in range(1, N)]
    else:
        raise ConfigError(f"model.weight_schedule must be one of {WEIGHT_SCHEDULES}, got {schedule!r}")
    return [1.0, *[float(w) for w in rec], float(lambda_match)]


def sweep_grid() -> list[tuple[float, float]]:
    """Appendix B.1's 25 pairs (λ_rec, λ_match) ∈ {0.01, 0.05, 0.1, 0.5, 1} ⊗ {1e-4, 1e-3, 1e-2, 1e-1, 1}."""
    return [(r, m) for r in (0.01, 0.05, 0.1, 0.5, 1.0) for m in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)]


# --- networks ------------------------------------------------------------------------------------------------


def _dense_body(d_in: int, hidden: int, layers: int, batch_norm: bool) -> nn.Sequential:
    mods: list[nn.Module] = [nn.Flatten()]
    for _ in range(layers):
        mods.append(nn.Linear(d_in, hidden))
        if batch_norm:
            mods.append(nn.BatchNorm1d(hidden))
        mods.append(nn.ReLU())
        d_in = hidden
    return nn.Sequential(*mods)


def _conv_block(c_in: int, c_out: int, k: int, batch_norm: bool) -> list[nn.Module]:
    mods: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, 1, k // 2)]
    if batch_norm:
        mods.append(nn.BatchNorm2d(c_out))
    return mods + [nn.ReLU()]


class ResBody(nn.Module):
    """Fig. 6a without its last operation: block → block → resampling conv, + residual, BN + ReLU.

    ``in_shape`` (C, H, W); ``stride`` 1 or 2; ``transpose`` for the generative direction (upsampling). The
    residual connection starts after the first block: identity without resampling, else a stride-2 (transposed)
    convolution like the resampling one. Output channels: ``filters`` (no resampling), 2·filters (inference,
    downsampling) or filters/2 (generative, upsampling).
    """

    def __init__(self, in_shape, filters: int, stride: int, transpose: bool, kernel: int = 3,
                 batch_norm: bool = True):
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.out_channels = self.output_channels(filters, stride, transpose)
        self.block1 = nn.Sequential(Unflatten(in_shape), *_conv_block(in_shape[0], filters, kernel, batch_norm))
        self.block2 = nn.Sequential(*_conv_block(filters, filters, kernel, batch_norm))
        if stride == 1:
            self.resample = nn.Conv2d(filters, filters, kernel, 1, kernel // 2)
            self.skip = nn.Identity()
        elif transpose:
            self.resample = nn.ConvTranspose2d(filters, self.out_channels, 4, 2, 1)
            self.skip = nn.ConvTranspose2d(filters, self.out_channels, 4, 2, 1)
        else:
            self.resample = nn.Conv2d(filters, self.out_channels, 4, 2, 1)
            self.skip = nn.Conv2d(filters, self.out_channels, 4, 2, 1)
        post: list[nn.Module] = [nn.BatchNorm2d(self.out_channels)] if batch_norm else []
        self.post = nn.Sequential(*post, nn.ReLU())

    @staticmethod
    def output_channels(filters: int, stride: int, transpose: bool) -> int:
        if stride == 1:
            return filters
        return max(1, filters // 2) if transpose else 2 * filters

    def forward(self, t: Tensor) -> Tensor:
        h = self.block1(t)
        return self.post(self.resample(self.block2(h)) + self.skip(h))


class GaussianNet(nn.Module):
    """A layer's conditional: z ↦ (μ(z), log Σ(z)) (flat), or μ(z) alone when ``gaussian`` is False.

    ``make_body()`` builds the hidden layers, ``make_head()`` the last operation; μ and Σ get separate bodies
    unless ``shared``.
    """

    def __init__(self, make_body, make_head, gaussian: bool = True, shared: bool = False):
        super().__init__()
        self.gaussian = gaussian
        self.body = make_body()
        self.mean_head = make_head()
        self.logvar_body = make_body() if gaussian and not shared else None
        self.logvar_head = make_head() if gaussian else None

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        h = self.body(z)
        mu = self.mean_head(h)
        if not self.gaussian:
            return mu, None
        hv = h if self.logvar_body is None else self.logvar_body(z)
        return mu, self.logvar_head(hv).clamp(LOGVAR_MIN, LOGVAR_MAX)


def _reparam(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    if generator is None:
        eps = torch.randn_like(mu)
    else:
        eps = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
    return mu + (0.5 * logvar).exp() * eps


# --- the model -----------------------------------------------------------------------------------------------


@register_model("stacked-wae", StackedWAEConfig, "StackedWAE: deep Markov latent hierarchy, Eq. 10 (Gaujac et al.)",
                "stacked", "stacked-wae-mnist")
@register_model("wae-deep", WAEDeepConfig, "The same hierarchy trained with the plain WAE objective (Eq. 7 ablation)",
                "stacked", "wae-deep-mnist")
class StackedWAE(AutoEncoderModel):
    """N-layer Markov hierarchy; ``objective`` picks Eq. 10 (``stacked``) or Eq. 7 (``wae``)."""

    def __init__(self, config: StackedWAEConfig, data_shape):
        super().__init__(config, data_shape)
        cfg = config
        self._validate(cfg)
        self.dims = [int(d) for d in cfg.latent_dims]
        self.num_layers = N = len(self.dims)
        self.arch = self._resolve_architecture(cfg)
        self.weights = layer_weights(cfg.lambda_rec, cfg.lambda_match, N, self.dims, cfg.weight_schedule)
        self.logvar_weights = [float(v) for v in cfg.logvar_penalty] if cfg.logvar_penalty else [0.0] * N
        hidden = scaled(cfg.hidden_units, cfg.width)
        if self.arch == "mlp":
            self._build_mlp(cfg, hidden)
        else:
            self._build_resnet(cfg, hidden)
        self.prior = build_prior("gaussian", self.dims[-1], 1.0)
        self.kernel = self.build_kernel("imq", "gaussian", None)
        # IMQ sums with base 2·d_i (the WAE code's choice for N(0, I_{d_i})) for every layer's MMD.
        self.layer_kernels: list[Kernel] = [build_kernel("imq", 2.0 * d) for d in self.dims]
        self.kernel_z1 = self.layer_kernels[0]

    # --- construction ------------------------------------------------------------------------------------------
    @staticmethod
    def _validate(cfg: StackedWAEConfig) -> None:
        N = len(cfg.latent_dims)
        checks = [
            (N >= 1, "model.latent_dims must list at least one latent dimension"),
            (all(d >= 1 for d in cfg.latent_dims), f"model.latent_dims must be positive, got {cfg.latent_dims}"),
            (len(cfg.hidden_units) == N, f"model.hidden_units needs one entry per latent layer ({N}), "
                                         f"got {len(cfg.hidden_units)}"),
            (all(h >= 1 for h in cfg.hidden_units), f"model.hidden_units must be positive, got {cfg.hidden_units}"),
            (cfg.hidden_layers >= 1, f"model.hidden_layers must be >= 1, got {cfg.hidden_layers}"),
            (cfg.architecture in ARCHITECTURES, f"model.architecture must be one of {ARCHITECTURES}, "
                                                f"got {cfg.architecture!r}"),
            (cfg.objective in OBJECTIVES, f"model.objective must be one of {OBJECTIVES}, got {cfg.objective!r}"),
            (cfg.weight_schedule in WEIGHT_SCHEDULES, f"model.weight_schedule must be one of {WEIGHT_SCHEDULES}, "
                                                      f"got {cfg.weight_schedule!r}"),
            (cfg.cost_expectation in EXPECTATIONS, f"model.cost_expectation must be one of {EXPECTATIONS}, "
                                                   f"got {cfg.cost_expectation!r}"),
            (cfg.mc_samples >= 1, f"model.mc_samples must be >= 1, got {cfg.mc_samples}"),
            (cfg.gen_variance in GEN_VARIANCES, f"model.gen_variance must be one of {GEN_VARIANCES}, "
                                                f"got {cfg.gen_variance!r}"),
            (cfg.gen_variance == "cost" or cfg.objective == "stacked",
             "model.gen_variance 'fit' applies to objective 'stacked' only (Eq. 7 trains Σ^p through its MMD)"),
            (cfg.width > 0 and math.isfinite(cfg.width), f"model.width must be positive, got {cfg.width}"),
            (cfg.lambda_rec >= 0 and math.isfinite(cfg.lambda_rec),
             f"model.lambda_rec must be >= 0, got {cfg.lambda_rec}"),
            (cfg.lambda_match >= 0 and math.isfinite(cfg.lambda_match),
             f"model.lambda_match must be >= 0, got {cfg.lambda_match}"),
            (cfg.lam >= 0 and math.isfinite(cfg.lam), f"model.lam must be >= 0, got {cfg.lam}"),
            (not cfg.logvar_penalty or len(cfg.logvar_penalty) == N,
             f"model.logvar_penalty needs one weight per latent layer ({N}) or none, got {len(cfg.logvar_penalty)}"),
            (all(v >= 0 for v in cfg.logvar_penalty), "model.logvar_penalty weights must be >= 0"),
            (cfg.conv_kernel >= 1 and cfg.conv_kernel % 2 == 1, f"model.conv_kernel must be odd, got {cfg.conv_kernel}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    def _resolve_architecture(self, cfg: StackedWAEConfig) -> str:
        arch = cfg.architecture
        if arch == "auto":
            arch = "resnet" if self.is_image and self.data_shape[0] > 1 else "mlp"
        if arch == "resnet" and not self.is_image:
            raise ConfigError("model.architecture resnet needs image data (C×H×W); use mlp for vectors")
        return arch

    def _build_mlp(self, cfg: StackedWAEConfig, hidden: list[int]) -> None:
        d = [math.prod(self.data_shape)] + self.dims
        L, bn, shared = cfg.hidden_layers, cfg.batch_norm, cfg.shared_trunk

        def net(d_in, h, d_out, gaussian, out_shape=None):
            def head():
                lin = nn.Linear(h, d_out)
                return lin if out_shape is None else nn.Sequential(lin, Unflatten(out_shape))

            return GaussianNet(lambda: _dense_body(d_in, h, L, bn), head, gaussian, shared)

        self.encoders = nn.ModuleList([net(d[i], hidden[i], d[i + 1], True) for i in range(self.num_layers)])
        self.decoders = nn.ModuleList(
            [net(d[1], hidden[0], d[0], False, self.data_shape)]
            + [net(d[i + 1], hidden[i], d[i], True) for i in range(1, self.num_layers)]
        )

    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """(C_i, H_i, W_i) of every latent for the resnet architecture."""
        cfg = self.config
        if len(cfg.latent_channels) != self.num_layers:
            raise ConfigError(f"model.architecture resnet needs model.latent_channels, one per latent layer "
                              f"({self.num_layers}), got {len(cfg.latent_channels)}")
        shapes = []
        for d, c in zip(self.dims, cfg.latent_channels):
            side = math.isqrt(d // c) if c >= 1 and d % c == 0 else 0
            if side < 1 or c * side * side != d:
                raise ConfigError(f"latent dim {d} is not C × H × H with C = {c} (resnet latents are square maps)")
            shapes.append((int(c), side, side))
        return shapes

    def _build_resnet(self, cfg: StackedWAEConfig, hidden: list[int]) -> None:
        shapes = [self.data_shape] + self.latent_shapes()
        k, bn, shared = cfg.conv_kernel, cfg.batch_norm, cfg.shared_trunk
        strides = []
        for i in range(self.num_layers):
            (_, h0, w0), (_, h1, w1) = shapes[i], shapes[i + 1]
            if (h0, w0) == (h1, w1):
                strides.append(1)
            elif (h0, w0) == (2 * h1, 2 * w1):
                strides.append(2)
            else:
                raise ConfigError(f"resnet: latent {i + 1} is {h1}×{w1} over a {h0}×{w0} map; each layer keeps the "
                                  "size or halves it")
        self.strides = strides

        def net(in_shape, out_shape, filters, stride, transpose, gaussian):
            def body():
                return ResBody(in_shape, filters, stride, transpose, k, bn)

            c_mid = ResBody.output_channels(filters, stride, transpose)

            def head():
                return nn.Sequential(nn.Conv2d(c_mid, out_shape[0], k, 1, k // 2), nn.Flatten())

            return GaussianNet(body, head, gaussian, shared)

        self.encoders = nn.ModuleList(
            [net(shapes[i], shapes[i + 1], hidden[i], strides[i], False, True) for i in range(self.num_layers)])
        self.decoders = nn.ModuleList(
            [net(shapes[i + 1], shapes[i], hidden[i], strides[i], True, i > 0) for i in range(self.num_layers)])

    # --- the conditionals ----------------------------------------------------------------------------------------
    def q_params(self, layer: int, z_below: Tensor) -> tuple[Tensor, Tensor]:
        """(μ_i^q, log Σ_i^q) of q(z_i | z_{i−1}) for layer i = 1 … N (z_0 = x)."""
        return self.encoders[layer - 1](z_below)

    def p_params(self, layer: int, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """(μ_i^p, log Σ_i^p) of p(z_{i−1} | z_i), i = 2 … N; i = 1 gives (decoder logits of x, None)."""
        return self.decoders[layer - 1](z)

    def decode_logits(self, z1: Tensor) -> Tensor:
        return self.decoders[0](z1)[0].reshape(z1.shape[0], *self.data_shape)

    # --- encoding / decoding -------------------------------------------------------------------------------------
    def encode_layers(self, x: Tensor, depth: int | None = None) -> list[Tensor]:
        """Means at every layer z_1 … z_depth (default N): z_i = μ_i^q(z_{i−1}) with z_0 = x."""
        depth = self.num_layers if depth is None else depth
        out, z = [], x
        for i in range(1, depth + 1):
            z = self.q_params(i, z)[0]
            out.append(z)
        return out

    def encode(self, x: Tensor) -> Tensor:
        """The deterministic top code: the chain of encoder means up to z_N."""
        return self.encode_layers(x)[-1]

    def encode_chain(self, x: Tensor, generator: torch.Generator | None = None):
        """One reparameterised chain z_i ~ q(z_i | z_{i−1}): (samples z_1…z_N, means, log-variances)."""
        zs, mus, logvars, z = [], [], [], x
        for i in range(1, self.num_layers + 1):
            mu, logvar = self.q_params(i, z)
            z = _reparam(mu, logvar, generator)
            zs.append(z)
            mus.append(mu)
            logvars.append(logvar)
        return zs, mus, logvars

    def decode_from(self, z: Tensor, depth: int) -> Tensor:
        """Data-space mean from a code of layer ``depth`` through the generative means μ_depth^p … μ_2^p, f."""
        self.check_depth(depth, allow_zero=False)
        for i in range(depth, 1, -1):
            z = self.p_params(i, z)[0]
        return self.output(self.decode_logits(z))

    def decode(self, z: Tensor) -> Tensor:
        """From z_N down through the generative means."""
        return self.decode_from(z, self.num_layers)

    def reconstruct_from(self, x: Tensor, depth: int) -> Tensor:
        """Encode to z_depth with the encoder means, decode down with the generative means (Fig. 3b row i).

        ``depth`` 0 returns x itself (the data row of Fig. 3b).
        """
        self.check_depth(depth, allow_zero=True)
        if depth == 0:
            return x.clone()
        return self.decode_from(self.encode_layers(x, depth)[-1], depth)

    @property
    def latent_layers(self) -> int:
        return self.num_layers

    def posterior_samples(self, x: Tensor):
        """Samples of q_N^agg: one chain z_1 → … → z_N per x."""
        return self.encode_chain(x)[0][-1], None, None

    def prior_chain(self, n: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """Ancestral samples [z_1, …, z_N] of the generative model, reparameterised (gradients reach θ_2…θ_N)."""
        z = self.prior.rsample((n,), generator=generator)
        out = [z]
        for i in range(self.num_layers, 1, -1):
            mu, logvar = self.p_params(i, z)
            z = _reparam(mu, logvar, generator)
            out.append(z)
        return out[::-1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral samples: z_N ~ N(0, I), z_{i−1} ~ p(z_{i−1}|z_i), x = f(z_1)."""
        return self.output(self.decode_logits(self.prior_chain(n, generator)[0]))

    # --- objectives ----------------------------------------------------------------------------------------------
    def logvar_penalty_term(self, logvars: list[Tensor]) -> Tensor:
        """Eq. 12: Σ_i λ_i^Σ Σ_m |log Σ_i^q[m]|, averaged over the batch."""
        total = logvars[0].new_zeros(())
        for w, lv in zip(self.logvar_weights, logvars):
            if w:
                total = total + w * lv.abs().sum(-1).mean()
        return total

    def latent_cost(self, layer: int, z_below: Tensor, z: Tensor, with_nll: bool = False):
        """E_{z̃ ~ p(z̃_{i−1} | z_i)} ‖z_{i−1} − z̃‖² per example for layer i ≥ 2 (cost_{i−1} of Eq. 10).

        With ``gen_variance='fit'`` Σ^p enters with a stop-gradient; ``with_nll`` then also returns the per-example
        Gaussian negative log-likelihood ½ Σ_m [log 2πΣ_m + (z_{i−1} − μ)_m² / Σ_m] of the encoded z_{i−1} (z and
        μ detached: it trains the Σ^p net only), else ``None``.
        """
        mu, logvar = self.p_params(layer, z)
        fit = self.config.gen_variance == "fit"
        lv = logvar.detach() if fit else logvar
        if self.config.cost_expectation == "analytic":
            cost = (z_below - mu).pow(2).sum(-1) + lv.exp().sum(-1)
        else:
            eps = torch.randn(self.config.mc_samples, *mu.shape, device=mu.device, dtype=mu.dtype)
            cost = (z_below - (mu + (0.5 * lv).exp() * eps)).pow(2).sum(-1).mean(0)
        if not with_nll:
            return cost
        nll = None
        if fit:
            r2 = (z_below.detach() - mu.detach()).pow(2)
            nll = 0.5 * (logvar + math.log(2 * math.pi) + r2 * torch.exp(-logvar)).sum(-1)
        return cost, nll

    def stacked_terms(self, x: Tensor) -> Objective:
        """Every term of Eq. 10 (unweighted) on one encoded chain, the weighted objective with Eq. 12, and (with
        ``gen_variance=fit``) the generative variances' likelihood as an extra."""
        zs, _, logvars = self.encode_chain(x)
        out: dict[str, Tensor] = {"cost0": squared_l2(self.output(self.decode_logits(zs[0])), x).mean()}
        nlls = []
        for n in range(1, self.num_layers):
            cost, nll = self.latent_cost(n + 1, zs[n - 1], zs[n], with_nll=True)
            out[f"cost{n}"] = cost.mean()
            if nll is not None:
                nlls.append(nll.mean())
        out["mmd"] = self.prior_mmd(zs[-1])
        out["logvar_penalty"] = self.logvar_penalty_term(logvars)
        w = self.weights
        eq10 = sum(w[n] * out[f"cost{n}"] for n in range(self.num_layers)) + w[-1] * out["mmd"]
        obj = Objective(paper=eq10 + out["logvar_penalty"], terms=out)
        if nlls:
            # Σ_n of the per-layer likelihoods, each weighted like its layer's cost (the same scale if a trunk is
            # shared with μ^p; otherwise only the Σ^p nets see it and Adam makes its scale immaterial).
            obj.logs["gen_nll"] = sum(nlls).detach()
            obj.extras["gen_fit"] = (1.0, sum(w[n] * nll for n, nll in enumerate(nlls, start=1)))
        return obj

    def wae_terms(self, x: Tensor) -> Objective:
        """Eq. 7: ‖x − f(z_1)‖² + λ·MMD(q_1^agg, p_Θ2:N(z_1)), prior samples drawn ancestrally (reparameterised).

        The whole encoder chain is run (Eq. 12 applies to every layer); Eq. 7 itself does not depend on
        q_2 … q_N, which enter the loss with weight 0 only so that every parameter is in the graph (DDP).
        """
        zs, mus, logvars = self.encode_chain(x)
        cost0 = squared_l2(self.output(self.decode_logits(zs[0])), x).mean()
        zp = self.prior_chain(x.shape[0])[0]
        m = mmd(self.gather(zs[0]), self.gather(zp), self.kernel_z1)
        pen = self.logvar_penalty_term(logvars)
        unused = sum(mu.sum() + lv.sum() for mu, lv in zip(mus[1:], logvars[1:]))
        return Objective(paper=cost0 + self.config.lam * m + pen + 0.0 * unused,
                         terms={"cost0": cost0, "mmd_z1": m, "logvar_penalty": pen})

    def objective(self, x: Tensor) -> Objective:
        return self.stacked_terms(x) if self.config.objective == "stacked" else self.wae_terms(x)

    # --- test metrics --------------------------------------------------------------------------------------------
    def eval_metrics(self, x: Tensor) -> dict[str, Tensor]:
        """Per-layer test quantities (batch means), for either objective.

        ``cost{n}`` and ``mmd`` (Eq. 10's terms, unweighted), ``objective`` (Eq. 10 weighted with this model's
        λ products, without Eq. 12), ``mmd_layer{i}`` (MMD between encoded samples of layer i and the implicit
        prior p_Θ{i+1:N}(z_i) sampled ancestrally; IMQ base 2·d_i), ``recon_depth{i}`` (‖x − reconstruct_from(x,
        i)‖²), ``enc_logvar{i}`` (mean log-variance of q_i, to watch for collapse); for ``wae`` also ``wae_objective``.
        """
        n = x.shape[0]
        zs, _, logvars = self.encode_chain(x)
        out: dict[str, Tensor] = {"cost0": squared_l2(self.output(self.decode_logits(zs[0])), x).mean()}
        for i in range(1, self.num_layers):
            out[f"cost{i}"] = self.latent_cost(i + 1, zs[i - 1], zs[i]).mean()
        out["mmd"] = mmd(zs[-1], self.prior.rsample((n,)), self.kernel)
        w = self.weights
        out["objective"] = sum(w[i] * out[f"cost{i}"] for i in range(self.num_layers)) + w[-1] * out["mmd"]
        prior = self.prior_chain(n)
        for i in range(self.num_layers):
            out[f"mmd_layer{i + 1}"] = mmd(zs[i], prior[i], self.layer_kernels[i])
            out[f"enc_logvar{i + 1}"] = logvars[i].mean()
        means = self.encode_layers(x)
        for i in range(1, self.num_layers + 1):
            out[f"recon_depth{i}"] = squared_l2(self.decode_from(means[i - 1], i), x).mean()
        if self.config.objective == "wae":
            out["wae_objective"] = out["cost0"] + self.config.lam * out["mmd_layer1"]
        return out
