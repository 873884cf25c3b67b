"""Network building blocks: DCGAN-style conv encoders/decoders, MLPs, Gaussian heads, batched K-head nets.

Architectures of the papers are available as presets (:data:`ENCODERS`, :data:`DECODERS`), each with a width
multiplier so the same topology runs on a CPU. Images are N×C×H×W in [0, 1]; decoders return *logits* (the
model applies a sigmoid for the mean image or uses the logits for a Bernoulli likelihood).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .likelihoods import LOGVAR_MAX, LOGVAR_MIN
from .registry import Registry

__all__ = [
    "Unflatten",
    "MLP",
    "ConvEncoder",
    "ConvDecoder",
    "GaussianHead",
    "BatchedHeads",
    "ENCODERS",
    "DECODERS",
    "build_encoder",
    "build_decoder",
    "scaled",
]


def scaled(channels: Sequence[int], width: float) -> list[int]:
    """Multiply channel counts by ``width`` (at least 1 channel each)."""
    return [max(1, int(round(c * width))) for c in channels]


class MLP(nn.Sequential):
    """Linear → (BatchNorm) → ReLU blocks, then a final linear layer (no activation)."""

    def __init__(self, sizes: Sequence[int], batch_norm: bool = True, activation: Callable[[], nn.Module] = nn.ReLU):
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            last = i == len(sizes) - 2
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if not last:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(sizes[i + 1]))
                layers.append(activation())
        super().__init__(*layers)


def _same_pad(kernel: int) -> int:
    return (kernel - 1) // 2


class ConvEncoder(nn.Module):
    """Stride-2 convolutions (BN + ReLU), flattened, then a linear layer to ``out_dim`` features."""

    def __init__(self, in_shape: Sequence[int], channels: Sequence[int], out_dim: int, kernel: int = 4,
                 batch_norm: bool = True):
        super().__init__()
        c, h, w = in_shape
        pad = _same_pad(kernel) if kernel % 2 else kernel // 2 - 1
        need = max(1, kernel - 2 * pad)  # the smallest input of the last convolution
        for _ in channels[:-1]:
            need = 2 * (need - 1) + kernel - 2 * pad
        if channels and min(h, w) < need:
            raise ConfigError(f"encoder: images of {h}×{w} pixels are too small for its {len(channels)} stride-2 "
                              f"convolutions (kernel {kernel}); it needs at least {need}×{need}")
        layers: list[nn.Module] = []
        for ch in channels:
            layers.append(nn.Conv2d(c, ch, kernel, stride=2, padding=pad))
            if batch_norm:
                layers.append(nn.BatchNorm2d(ch))
            layers.append(nn.ReLU())
            c = ch
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            self.features.eval()
            n_flat = self.features(torch.zeros(1, *in_shape)).numel()
            self.features.train()
        self.fc = nn.Linear(n_flat, out_dim)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).flatten(1))


class ConvDecoder(nn.Module):
    """Linear to a start grid of ``fc_channels``, stride-2 transposed convs (BN + ReLU), a stride-1 output conv.

    The start grid is H / 2^len(channels); the WAE MNIST decoder is FC 7×7×1024 → 512 → 256 → 1, CelebA is
    FC 8×8×1024 → 512 → 256 → 128 → 3 (transposed convs "FSConv" in the paper).
    """

    def __init__(self, in_dim: int, out_shape: Sequence[int], fc_channels: int, channels: Sequence[int],
                 kernel: int = 4, batch_norm: bool = True, out_kernel: int = 5):
        super().__init__()
        c_out, h, w = out_shape
        f = 2 ** len(channels)
        if h < f or w < f:
            raise ConfigError(f"decoder: images of {h}×{w} pixels are too small for its {len(channels)} stride-2 "
                              f"up-convolutions; it needs at least {f}×{f}")
        if h % f or w % f:
            raise ConfigError(f"decoder: image size {h}×{w} is not divisible by 2^{len(channels)}")
        self.start = (fc_channels, h // f, w // f)
        fc: list[nn.Module] = [nn.Linear(in_dim, math.prod(self.start))]
        if batch_norm:
            fc.append(nn.BatchNorm1d(math.prod(self.start)))
        fc.append(nn.ReLU())
        self.fc = nn.Sequential(*fc)
        layers: list[nn.Module] = []
        c = fc_channels
        for ch in channels:
            # kernel 4, stride 2, padding 1 doubles the size exactly; kernel 5 needs output_padding 1.
            if kernel % 2 == 0:
                layers.append(nn.ConvTranspose2d(c, ch, kernel, stride=2, padding=kernel // 2 - 1))
            else:
                layers.append(nn.ConvTranspose2d(c, ch, kernel, stride=2, padding=kernel // 2, output_padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(ch))
            layers.append(nn.ReLU())
            c = ch
        layers.append(nn.Conv2d(c, c_out, out_kernel, stride=1, padding=out_kernel // 2))
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.deconv(self.fc(z).view(z.shape[0], *self.start))


class GaussianHead(nn.Module):
    """Linear map to (mean, log-variance), log-variance clamped to a safe range."""

    def __init__(self, in_dim: int, out_dim: int, logvar_min: float = LOGVAR_MIN, logvar_max: float = LOGVAR_MAX):
        super().__init__()
        self.linear = nn.Linear(in_dim, 2 * out_dim)
        self.logvar_min, self.logvar_max = logvar_min, logvar_max

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.linear(h).chunk(2, dim=-1)
        return mu, logvar.clamp(self.logvar_min, self.logvar_max)


class BatchedHeads(nn.Module):
    """K independent single-hidden-layer dense nets on the same input, evaluated in one batched op.

    in → hidden (per head) → ReLU → out (per head). The first layer for all heads is one Linear(in, K·hidden);
    the second is a batched matmul with a (K, hidden, out) weight. Output: (N, K, out).
    """

    def __init__(self, in_dim: int, num_heads: int, hidden: int, out_dim: int):
        super().__init__()
        self.k, self.hidden, self.out_dim = num_heads, hidden, out_dim
        self.first = nn.Linear(in_dim, num_heads * hidden)
        bound = 1.0 / math.sqrt(hidden)
        self.weight = nn.Parameter(torch.empty(num_heads, hidden, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_heads, out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.first(x.flatten(1))).view(x.shape[0], self.k, self.hidden)
        return torch.einsum("nkh,kho->nko", h, self.weight) + self.bias


# --- architecture presets ----------------------------------------------------------------------------------
# Each builder takes (shape, out_dim, width) and returns a module. Registries, not if/elif on names.

def _wae_encoder(shape, out_dim, width):
    c, h, w = shape
    kernel = 4 if h <= 32 else 5
    return ConvEncoder(shape, scaled([128, 256, 512, 1024], width), out_dim, kernel=kernel)


def _wae_decoder(shape, in_dim, width):
    c, h, w = shape
    n_up = {28: 2, 32: 3, 64: 3}.get(h, 2)
    kernel = 4 if h <= 32 else 5
    chans = scaled([512, 256, 128][:n_up], width)
    return ConvDecoder(in_dim, shape, scaled([1024], width)[0], chans, kernel=kernel)


def _gm_discrete_encoder(shape, out_dim, width):
    # GM-WAE §3: "a 2-layer DCGAN-style network with largest convolution layer composed of 32 filters".
    return ConvEncoder(shape, scaled([16, 32], width), out_dim, kernel=4)


def _gm_decoder(shape, in_dim, width):
    # GM-WAE §3: "a 3-layer DCGAN-style network with smallest deconvolution layer composed of 128 filters":
    # FC to (512 × H/4 × W/4) → deconv 256 → deconv 128 → output conv.
    c, h, w = shape
    return ConvDecoder(in_dim, shape, scaled([512], width)[0], scaled([256, 128], width), kernel=4)


def _mlp_encoder(shape, out_dim, width):
    d = math.prod(shape)
    hid = scaled([512, 512], width)
    return nn.Sequential(nn.Flatten(), MLP([d, *hid, out_dim]))


class Unflatten(nn.Module):
    """(N, ∏shape) → (N, *shape): the reshape block every decoder ends or starts with (no parameters)."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


def _mlp_decoder(shape, in_dim, width):
    d = math.prod(shape)
    hid = scaled([512, 512], width)
    return nn.Sequential(MLP([in_dim, *hid, d]), Unflatten(shape))


# --- networks sized to any image (the estimator and `wae cluster`) -------------------------------------------------

MIN_IMAGE_SIDE = 4
"""The smallest image side the sized conv nets take (one stride-2 stage); smaller images are refused."""


def conv_stages(h: int, w: int, max_stages: int = 3) -> int:
    """Stride-2 stages for an h×w image: halve while the smaller side stays ≥ 2 after the halving, at most
    ``max_stages`` (sides of 4–6 px: 1, 7–12: 2, ≥ 13: 3). Refuses images with a side below :data:`MIN_IMAGE_SIDE`."""
    s = min(int(h), int(w))
    if s < MIN_IMAGE_SIDE:
        raise ConfigError(f"images of {h}×{w} pixels are too small for a conv net: each side must be at least "
                          f"{MIN_IMAGE_SIDE} pixels (pass them as vectors, N×D, instead)")
    n = 0
    while n < max_stages and s >= 4:
        s = (s + 1) // 2
        n += 1
    return n


class SizedConvDecoder(nn.Module):
    """Linear to a ``fc_channels`` × ⌈H/2ⁿ⌉ × ⌈W/2ⁿ⌉ grid, n stride-2 transposed convs (kernel 4: exact doubling, BN +
    ReLU), a 3×3 output conv, then a centred crop to H×W: a DCGAN-style decoder for any image size (``ConvDecoder``
    needs H and W divisible by 2ⁿ)."""

    def __init__(self, in_dim: int, out_shape: Sequence[int], fc_channels: int, channels: Sequence[int]):
        super().__init__()
        c_out, h, w = (int(s) for s in out_shape)
        f = 2 ** len(channels)
        self.start = (fc_channels, -(-h // f), -(-w // f))
        self.out_hw = (h, w)
        self.fc = nn.Sequential(nn.Linear(in_dim, math.prod(self.start)), nn.BatchNorm1d(math.prod(self.start)),
                                nn.ReLU())
        layers: list[nn.Module] = []
        c = fc_channels
        for ch in channels:
            layers += [nn.ConvTranspose2d(c, ch, 4, stride=2, padding=1), nn.BatchNorm2d(ch), nn.ReLU()]
            c = ch
        layers.append(nn.Conv2d(c, c_out, 3, stride=1, padding=1))
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        y = self.deconv(self.fc(z).view(z.shape[0], *self.start))
        (h, w), (H, W) = self.out_hw, y.shape[-2:]
        top, left = (H - h) // 2, (W - w) // 2
        return y[..., top: top + h, left: left + w]


def _sized_encoder(shape, out_dim, width):
    # 3×3 stride-2 convs (⌈s/2⌉ per stage: any size, odd ones too), 32 → 64 → 128 filters × width
    c, h, w = shape
    n = conv_stages(h, w)
    return ConvEncoder(shape, scaled([32, 64, 128][:n], width), out_dim, kernel=3)


def _sized_decoder(shape, in_dim, width):
    # mirror of the encoder: FC to 128 × (grid) → n deconvs (… 128 → 64 → 32 filters) × width → output conv, cropped
    c, h, w = shape
    n = conv_stages(h, w)
    return SizedConvDecoder(in_dim, shape, scaled([128], width)[0], scaled([128, 64, 32][3 - n:], width))


ENCODERS: Registry[Callable[..., nn.Module]] = Registry("encoder architecture")
DECODERS: Registry[Callable[..., nn.Module]] = Registry("decoder architecture")
for _name, _enc in (("wae-dcgan", _wae_encoder), ("gm-discrete", _gm_discrete_encoder), ("mlp", _mlp_encoder),
                    ("conv-sized", _sized_encoder)):
    ENCODERS.add(_name, _enc)
for _name, _dec in (("wae-dcgan", _wae_decoder), ("gm-dcgan", _gm_decoder), ("mlp", _mlp_decoder),
                    ("conv-sized", _sized_decoder)):
    DECODERS.add(_name, _dec)


def build_encoder(name: str, shape: Sequence[int], out_dim: int, width: float = 1.0) -> nn.Module:
    build = ENCODERS.get(name)
    if len(shape) == 1 and name != "mlp":
        build = ENCODERS.get("mlp")  # vector data: convolutions do not apply
    return build(tuple(shape), out_dim, width)


def build_decoder(name: str, shape: Sequence[int], in_dim: int, width: float = 1.0) -> nn.Module:
    build = DECODERS.get(name)
    if len(shape) == 1 and name != "mlp":
        build = DECODERS.get("mlp")
    return build(tuple(shape), in_dim, width)
