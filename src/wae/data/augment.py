"""Batched, on-device data augmentation for image batches (beyond the papers, off by default).

``random_shift`` translates every image of a batch by its own integer offset in [−s, s]² with zero fill (the "pad
and random-crop" augmentation of MNIST/CIFAR training), in one indexing op on the batch's device: no Python loop over
images, no host round trip. It is the cheapest way to show a model on 5,000 digits more of the variation that the
60,000 the papers trained on contain.

``random_affine`` warps every image by its own small rotation, scaling and (sub-pixel) translation with bilinear
sampling, again in one batched op (``affine_grid`` + ``grid_sample``); the models' optional cluster-consistency term
(``model.consistency_weight``) compares q(k|x) with q(k|warped x).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["shift_images", "random_shift", "affine_images", "random_affine"]


def shift_images(x: Tensor, dy: Tensor, dx: Tensor, max_shift: int | None = None) -> Tensor:
    """Translate image ``i`` of ``x`` (N, C, H, W) down by ``dy[i]`` and right by ``dx[i]`` pixels (negative: up /
    left); pixels shifted in are 0. ``|dy|, |dx|`` must be below the image's height/width. ``max_shift``, a known
    bound on ``|dy|, |dx|``, saves reading the offsets back to the host (a device sync in a training step)."""
    if x.dim() != 4:
        raise ValueError(f"shift_images needs a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    s = max_shift if max_shift is not None else int(
        max(dy.abs().max().item() if dy.numel() else 0, dx.abs().max().item() if dx.numel() else 0))
    if s >= min(h, w):
        raise ValueError(f"shift of {s} pixels does not fit images of size {h}x{w}")
    if s == 0:
        return x.clone()
    xp = F.pad(x, (s, s, s, s))
    # output pixel (r, q) of image i reads padded pixel (r + s − dy_i, q + s − dx_i)
    rows = torch.arange(h, device=x.device)[None, :] + (s - dy.to(x.device).long())[:, None]  # (N, H)
    cols = torch.arange(w, device=x.device)[None, :] + (s - dx.to(x.device).long())[:, None]  # (N, W)
    i = torch.arange(n, device=x.device)[:, None, None, None]
    ch = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[i, ch, rows[:, None, :, None], cols[:, None, None, :]]


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Translate each image of ``x`` (N, C, H, W) by independent integer offsets drawn uniformly from
    [−max_shift, max_shift] in each direction (zero fill). ``max_shift = 0`` returns ``x`` itself."""
    if max_shift <= 0:
        return x
    n = x.shape[0]
    d = torch.randint(-max_shift, max_shift + 1, (2, n), device=x.device, generator=generator)
    return shift_images(x, d[0], d[1], max_shift)


def affine_images(x: Tensor, angle: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """Warp image ``i`` of ``x`` (N, C, H, W): rotate its content by ``angle[i]`` radians counter-clockwise as
    displayed and scale it by ``scale[i]``, both about the image centre, then translate it by ``shift[i]`` =
    (right, down) pixels; bilinear sampling, zeros outside. Angle 0, scale 1 and integer shifts reproduce
    :func:`shift_images` exactly; angle π/2 on a square image is ``torch.rot90(x, 1, (2, 3))``."""
    if x.dim() != 4:
        raise ValueError(f"affine_images needs a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    dt, dev = x.dtype, x.device
    angle, scale, shift = angle.to(dev, dt), scale.to(dev, dt), shift.to(dev, dt)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # Output → input map in pixel units about the centre (y down): in = M (out − t), M = R(−angle) / scale.
    # affine_grid works in normalised units (D = diag(2/W, 2/H) per pixel): θ = D M D⁻¹, offset −D M t.
    ax, ay = 2.0 / w, 2.0 / h
    m00, m01, m10, m11 = cos, -sin * (ax / ay), sin * (ay / ax), cos
    tx, ty = shift[:, 0] * ax, shift[:, 1] * ay
    theta = torch.stack([torch.stack([m00, m01, -(m00 * tx + m01 * ty)], -1),
                         torch.stack([m10, m11, -(m10 * tx + m11 * ty)], -1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine(x: Tensor, rotate_deg: float = 0.0, shift: float = 0.0, scale: float = 0.0,
                  generator: torch.Generator | None = None) -> Tensor:
    """Warp each image of ``x`` (N, C, H, W) by an independent random rotation in ±``rotate_deg`` degrees,
    scaling by a factor in [1 − ``scale``, 1 + ``scale``] and translation in ±``shift`` pixels per direction, all
    uniform (see :func:`affine_images`)."""
    n = x.shape[0]
    u = torch.rand(4, n, device=x.device, dtype=x.dtype, generator=generator) * 2 - 1  # uniform in [−1, 1]
    angle = u[0] * (rotate_deg * torch.pi / 180.0)
    return affine_images(x, angle, torch.stack([u[1], u[2]], -1) * shift, 1.0 + u[3] * scale)
