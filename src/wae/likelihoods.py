"""Observation likelihoods and the log-variance range shared by every model (no training engine here)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LOGVAR_MIN", "LOGVAR_MAX", "LOG_2PI", "clamp_logvar", "bernoulli_log_likelihood",
           "gaussian_log_likelihood"]

LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0
"""Every predicted log-variance is clamped to this range (σ from e^-6 to e^4): no exp overflow, no zero variance."""

LOG_2PI = math.log(2.0 * math.pi)


def clamp_logvar(logvar: Tensor) -> Tensor:
    return logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


def bernoulli_log_likelihood(logits: Tensor, x: Tensor) -> Tensor:
    """log B(x | sigmoid(logits)) per example (summed over all but the first dimension); x in [0, 1]."""
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").flatten(1).sum(1)


def gaussian_log_likelihood(mean: Tensor, x: Tensor, logvar: Tensor | float) -> Tensor:
    """log N(x | mean, diag e^logvar) per example (summed over all but the first dimension); ``logvar`` a tensor
    broadcastable to ``mean`` or one number for a fixed variance."""
    if not isinstance(logvar, Tensor):
        logvar = torch.full_like(mean, float(logvar))
    return -0.5 * ((x - mean).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).flatten(1).sum(1)
