"""Nearest neighbours of every training datum, for the neighbour view of the consistency term."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["nearest_neighbours"]


def nearest_neighbours(x: Tensor, k: int, chunk: int = 1024) -> Tensor:
    """Indices (n, k) of each row's k nearest other rows of ``x`` (any shape (n, ...), flattened; Euclidean),
    nearest first; a row is never its own neighbour. Computed in chunks of ``chunk`` rows through
    ‖a‖² + ‖b‖² − 2a·b, so memory is O(chunk · n), never O(n² d)."""
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"nearest_neighbours needs 1 <= k < n, got k={k}, n={n}")
    flat = x.reshape(n, -1).to(torch.float32 if not x.is_floating_point() or x.dtype == torch.float16 else x.dtype)
    sq = flat.pow(2).sum(-1)
    out = torch.empty(n, k, dtype=torch.long, device=x.device)
    for i in range(0, n, chunk):
        d = sq[i: i + chunk, None] + sq[None, :] - 2.0 * flat[i: i + chunk] @ flat.T
        rows = torch.arange(i, min(i + chunk, n), device=x.device)
        d[rows - i, rows] = float("inf")
        out[i: i + chunk] = d.topk(k, dim=-1, largest=False).indices
    return out
