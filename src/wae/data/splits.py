"""The splits of a run: training, validation (carved from the training split) and test data.

Protocol. The validation split is carved at random from the training split (``data.val_fraction``, seeded by
:data:`VAL_SEED` so that every training seed is scored on the same examples) and is
never trained on; per-epoch curves and the ``val/…`` metrics come from it, and settings are chosen on it. The test
split is read once, at the end of a run (``data.evaluate_test``; off while choosing settings). A data set without a
test split has no ``test/…`` metrics: the run is judged on its validation split, or, with neither, on its training
data under ``train/…`` — never called "test".
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from ..config import DataConfig
from ..errors import DataError, WAEError
from .core import Dataset, load_dataset

__all__ = ["RunData", "load_run_data", "validation_size"]

log = logging.getLogger("wae")


@dataclass
class RunData:
    """The data of one run: ``train`` (what the model learns from), ``val`` and ``test`` (either may be None)."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None

    @property
    def held_out(self) -> tuple[str, Dataset]:
        """``(name, data)`` of the split a run is judged on: ``test``, else ``val``, else ``train`` (the name is the
        prefix of its metrics)."""
        if self.test is not None:
            return "test", self.test
        if self.val is not None:
            return "val", self.val
        return "train", self.train

    @property
    def curve(self) -> tuple[str, Dataset]:
        """``(name, data)`` of the per-epoch curves: the validation split, else the training data (never the test
        split: looking at it during training would be choosing on it)."""
        return ("val", self.val) if self.val is not None else ("train", self.train)

    @property
    def streamed(self) -> bool:
        """True when a split is streamed from disk."""
        return any(d is not None and d.streamed for d in (self.train, self.val, self.test))

    def in_memory(self, limit: int, seed: int = 0) -> "RunData":
        """Every split held in memory: streamed ones read whole, or as a random sample of ``limit`` examples
        (:meth:`Dataset.in_memory`)."""
        return RunData(*(None if d is None else d.in_memory(limit, seed) for d in (self.train, self.val, self.test)))

    def evaluated(self) -> list[tuple[str, Dataset]]:
        """Every split that gets metrics at the end: ``val`` and ``test`` when present, else ``train``."""
        out = [(n, d) for n, d in (("val", self.val), ("test", self.test)) if d is not None]
        return out or [("train", self.train)]


VAL_SEED = 0
"""Seed of the validation carve: fixed across training seeds, so every seed is scored on the same examples."""


def validation_size(cfg: DataConfig, n: int) -> int:
    """The number of validation examples for a training split of ``n``: ``round(val_fraction · n)``."""
    k = int(round(cfg.val_fraction * n))
    if k and k >= n:
        raise DataError(f"data.val_fraction {cfg.val_fraction} leaves none of the {n} training examples to train on")
    return k


def load_run_data(cfg: DataConfig, seed: int = 0, need_test: bool | None = None) -> RunData:
    """Load the training split, carve the validation split, apply ``limit``, load the test split.

    ``seed`` (the run's ``train.seed``) draws the ``limit`` subset; ``need_test`` (default ``cfg.evaluate_test``)
    whether the test split is loaded at all.
    """
    full = load_dataset(cfg.dataset, "train", data_dir=cfg.data_dir)
    k = validation_size(cfg, len(full))
    train, val = full.split_off(k, seed=VAL_SEED) if k else (full, None)
    if cfg.limit:
        train = train.subset(cfg.limit, seed=seed)
    test = None
    if need_test if need_test is not None else cfg.evaluate_test:
        name = cfg.eval_dataset or f"{cfg.dataset}:test"
        try:
            test = load_dataset(name, "test", data_dir=cfg.eval_data_dir or cfg.data_dir)
        except WAEError:
            if cfg.eval_dataset:
                raise
            log.warning("%s has no test split: the run is judged on its %s split", cfg.dataset,
                        "validation" if val is not None else "training")
        if test is not None:
            if cfg.eval_limit and len(test) > cfg.eval_limit:
                test = test.subset(cfg.eval_limit, seed=0)
            if tuple(test.shape) != tuple(train.shape):
                raise DataError(f"test data {name} has examples of shape {test.shape}, the training data "
                                f"{train.shape}")
    return RunData(train, val, test)
