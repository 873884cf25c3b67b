"""Callbacks used by reproductions: snapshots at given steps and periodic probes of the model."""
from __future__ import annotations

from typing import Callable

import lightning as L
import torch

from ..data.source import apply_batched
from ..evaluation.clustering import clustering_metrics

__all__ = ["StepProbe"]


class StepProbe(L.Callback):
    """Calls ``fn(model, step)`` (model in eval mode, no grad) at the given global steps and/or every ``every`` steps.

    Results are kept in ``self.records`` as (step, value) pairs.
    """
    def __init__(self, fn: Callable, steps: list[int] | None = None, every: int = 0, at_start: bool = True):
        self.fn, self.steps, self.every, self.at_start = fn, set(steps or []), every, at_start
        self.records: list[tuple[int, object]] = []

    def _probe(self, pl_module, step: int) -> None:
        model = pl_module.model
        was = model.training
        model.eval()
        with torch.no_grad():
            self.records.append((step, self.fn(model, step)))
        model.train(was)

    def on_train_start(self, trainer, pl_module) -> None:
        if self.at_start and trainer.global_step == 0:
            self._probe(pl_module, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        s = trainer.global_step
        if s in self.steps or (self.every and s % self.every == 0):
            if not self.records or self.records[-1][0] != s:
                self._probe(pl_module, s)


class EpochEvaluator(L.Callback):
    """Every ``every`` epochs: held-out reconstruction error, and clustering accuracies for discrete-latent models,
    logged as ``val/*`` (so accuracy per epoch shows up in the curves, GMVAE Fig. 4). ``x``, ``y`` are the
    validation split (``prefix`` ``train/`` when a run has none and the curves come from training data)."""
    def __init__(self, x: torch.Tensor, y: torch.Tensor | None, every: int = 1, batch_size: int = 500,
                 prefix: str = "val/"):
        self.x, self.y, self.every, self.batch_size = x, y, max(1, int(every)), batch_size
        self.prefix = prefix
        self.history: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if (trainer.current_epoch + 1) % self.every or not trainer.is_global_zero:
            return
        model = pl_module.model
        was = model.training
        model.eval()
        out: dict[str, float] = {}

        def per_example(xb):  # the squared error, then q(k|x) for a model with clusters
            err = (model.reconstruct(xb) - xb).pow(2).flatten(1).sum(1, keepdim=True)
            return torch.cat([err, model.cluster_probs(xb)], 1) if model.has_discrete_latent else err

        cols = apply_batched(per_example, self.x, self.batch_size, pl_module.device)
        out[f"{self.prefix}recon_mse"] = float(cols[:, 0].mean())
        if cols.shape[1] > 1 and self.y is not None:
            m = clustering_metrics(cols[:, 1:].numpy(), self.y.numpy(), prefix=self.prefix)
            out.update({k: float(v) for k, v in m.items()})
        model.train(was)
        out["epoch"] = trainer.current_epoch
        self.history.append(out)
        for lg in trainer.loggers:
            lg.log_metrics({k: v for k, v in out.items() if k != "epoch"}, step=trainer.global_step)
