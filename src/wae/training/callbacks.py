"""Callbacks used by reproductions: snapshots at given steps and periodic probes of the model."""
from __future__ import annotations

from typing import Callable

import lightning as L
import torch

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
