"""Teachers (``train.teacher``, beyond the papers): a partition of the training data computed before training, without
labels, that the model learns from — its shares become the prior's weights p(k), its clusters the targets of the
pseudo-label term (``model.pseudo_label_weight``). GM-WAE's own objective prefers clusters of equal mass (the MMD to
a prior of equal weights is lowest so: benchmarks/notes/2026-12-07-issue33-diagnostics.md); a teacher brings the
data's proportions, and the model adds what the teacher lacks: calibrated q(k|x) and a generator per cluster."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from ..data.splits import RunData

__all__ = ["TEACHERS", "Teaching", "teach"]

log = logging.getLogger("wae")


def _umap_gmm(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from ..evaluation.baselines import umap_gmm_baseline

    return umap_gmm_baseline(x, k, seed=seed).labels


TEACHERS: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {"umap-gmm": _umap_gmm}
"""``train.teacher`` → ``fn(x, k, seed)``: a cluster id in 0..k−1 per row of ``x`` (N × D, float32), label-free.
``umap-gmm``: UMAP to 10 dimensions then a Gaussian mixture (:func:`wae.evaluation.baselines.umap_gmm_baseline`,
the N2D recipe and the practitioner's baseline); needs umap-learn."""


class Teaching(NamedTuple):
    """What a teacher gives a run."""

    targets: torch.Tensor
    """(N,) int64: the teacher's cluster of each training example (the pseudo-label targets)."""
    log_weights: torch.Tensor
    """(K,) the log of the teacher's cluster shares (each at least :data:`MIN_SHARE` / K, renormalised): the
    prior's p(k)."""

    def apply(self, lit) -> None:
        """Give a Lightning module's model the teacher's p(k) and, if it takes them, its clusters as targets."""
        lit.model.set_cluster_weights(self.log_weights)
        if lit.model.takes_cluster_targets:
            lit.targets = self.targets


MIN_SHARE = 0.01
"""The smallest prior weight a teacher's cluster gets (relative to K uniform clusters: 1 % of 1/K), so that a
cluster the teacher left empty stays reachable."""


def teach(name: str | None, data: RunData, k: int, seed: int) -> tuple[Teaching | None, str | None]:
    """The partition of ``data.train`` by teacher ``name`` into ``k`` clusters (seed ``seed``) and a line on it; or
    None and why: no teacher or a model without clusters (``k`` < 2; no line), data streamed from disk, or the
    teacher's package missing — the last two logged as a warning (the run then learns its own proportions, as
    without a teacher)."""
    if not name or k < 2:
        return None, None
    train = data.train
    if train.streamed:
        return None, _skipped(name, "the training data are streamed from disk (a teacher needs them in memory)")
    x = train.x.detach().cpu().flatten(1).float().numpy()
    try:
        labels = np.asarray(TEACHERS[name](x, k, seed), dtype=np.int64)
    except ImportError as e:
        return None, _skipped(name, str(e).strip().splitlines()[0])
    shares = np.bincount(labels, minlength=k)[:k] / len(labels)
    w = np.maximum(shares, MIN_SHARE / k)
    w = w / w.sum()
    note = (f"teacher {name}: {len(np.unique(labels))} of {k} clusters used, shares "
            + " ".join(f"{s:.2f}" for s in np.sort(shares)[::-1]))
    return Teaching(torch.as_tensor(labels), torch.as_tensor(np.log(w), dtype=torch.float32)), note


def _skipped(name: str, why: str) -> str:
    note = f"teacher {name} skipped: {why}"
    log.warning(note)
    return note
