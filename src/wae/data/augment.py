"""Batched, on-device data augmentation for image batches (beyond the papers, off by default).

``random_affine`` warps every image by its own small rotation, scaling and (sub-pixel) translation with bilinear
sampling, in one batched op on the batch's device (``affine_grid`` + ``grid_sample``); the models' optional cluster-consistency term
(``model.consistency.weight``) compares q(k|x) with q(k|warped x).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["affine_images", "random_affine"]


def affine_images(x: Tensor, angle: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """Warp image ``i`` of ``x`` (N, C, H, W): rotate its content by ``angle[i]`` radians counter-clockwise as
    displayed and scale it by ``scale[i]``, both about the image centre, then translate it by ``shift[i]`` =
    (right, down) pixels; bilinear sampling, zeros outside. Angle 0, scale 1 and integer shifts move
    the pixels exactly; angle π/2 on a square image is ``torch.rot90(x, 1, (2, 3))``."""
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
