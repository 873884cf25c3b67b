"""``arcs``: the synthetic 2-D clustering data of the GMVAE paper (§4.1), after Johnson et al. (2016).

Geometry (our choice, documented here): ``K = 5`` circles of radius ``arc_radius = 0.8`` whose centres lie on
a ring of radius 1 at angles ``2πk/5``. Points of class ``k`` lie on the half of circle ``k`` (an arc of
``arc_span = π`` radians) centred on direction ``2πk/5 + π/2``, i.e. each arc curls anticlockwise from the
centre of the figure outwards: a five-armed pinwheel whose curved arms meet near the origin, so the classes are
far from Gaussian blobs (a 5-component Gaussian mixture reaches an adjusted Rand index of only about 0.3).
Each point is ``centre_k + arc_radius·(cos θ, sin θ) + noise·ε`` with ``θ`` uniform on the arc and
``ε ~ N(0, I)``, ``noise = 0.05``. Classes are balanced (``n/5`` points each, in random order); labels are the
circle index.
Values are not restricted to [0, 1] (roughly in [-1.9, 1.9]²).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .core import Dataset, register_dataset

__all__ = ["make_arcs"]


def make_arcs(n: int = 10000, seed: int = 0, num_arcs: int = 5, ring_radius: float = 1.0, arc_radius: float = 0.8,
              arc_span: float = math.pi, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(float32 ``n×2`` points, int64 labels) of the arcs data set; deterministic given ``seed``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"arcs: n must be a positive integer, got {n!r}")
    if isinstance(num_arcs, bool) or not isinstance(num_arcs, (int, np.integer)) or num_arcs < 1:
        raise DataError(f"arcs: num_arcs must be a positive integer, got {num_arcs!r}")
    for key, val in (("ring_radius", ring_radius), ("arc_radius", arc_radius), ("arc_span", arc_span),
                     ("noise", noise)):
        if not isinstance(val, (int, float)) or not math.isfinite(val) or val < 0:
            raise DataError(f"arcs: {key} must be a finite number ≥ 0, got {val!r}")
    rng = np.random.default_rng(int(seed))
    labels = rng.permutation(np.arange(int(n)) % num_arcs).astype(np.int64)
    angle = 2 * np.pi * np.arange(num_arcs) / num_arcs
    centres = ring_radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    theta = angle[labels] + np.pi / 2 + rng.uniform(-arc_span / 2, arc_span / 2, size=int(n))
    points = centres[labels] + arc_radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    points += noise * rng.standard_normal((int(n), 2))
    return points.astype(np.float32), labels


@register_dataset("arcs", description="synthetic 2-D: 5 interleaved noisy circle arcs (GMVAE paper §4.1), "
                  "10k points, 5 classes", splits=("train", "test"), image=False,
                  locate=lambda d: (True, "generated"))
def _arcs(split: str, data_dir: Path | None, n: int = 10000, seed: int = 0, **geometry) -> Dataset:
    """``train``: ``n`` points from ``seed``; ``test``: ``n`` points from ``seed + 1``. ``geometry``: see make_arcs."""
    unknown = set(geometry) - {"num_arcs", "ring_radius", "arc_radius", "arc_span", "noise"}
    if unknown:
        raise DataError(f"arcs: unknown option(s) {', '.join(sorted(unknown))}; options: n, seed, num_arcs, "
                        f"ring_radius, arc_radius, arc_span, noise")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"arcs: seed must be an integer, got {seed!r}")
    x, y = make_arcs(n, int(seed) + (1 if split == "test" else 0), **geometry)
    k = int(geometry.get("num_arcs", 5))
    return Dataset(f"arcs:{split}", torch.from_numpy(x), torch.from_numpy(y), num_classes=k)
