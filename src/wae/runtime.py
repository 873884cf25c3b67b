"""The process a command runs in: its rank when several run one job (torchrun, Lightning's launcher), and
Lightning's log lines and warnings that say nothing to a user of ``wae``, silenced in one place."""
from __future__ import annotations

import logging
import os
import random
import warnings
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["LIGHTNING_NOISE", "kept_global_rng", "local_rank", "process_rank", "quiet_lightning"]

LIGHTNING_NOISE = (".*LeafSpec.*", ".*weights_only.*", ".*litlogger.*", ".*does not have many workers.*",
                   ".*GPU available.*", ".*TPU available.*", ".*Tip.*", ".*max_epochs.*",
                   ".*LightningModule.*has parameters that were not used.*",
                   ".*Checkpoint directory.*exists and is not empty.*")
"""Warnings (regular expressions) Lightning and torch give on every run that a user can do nothing about."""


def quiet_lightning() -> None:
    """Lightning's loggers to WARNING and :data:`LIGHTNING_NOISE` ignored (inside ``warnings.catch_warnings()`` to
    keep it to a block)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                 "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pat in LIGHTNING_NOISE:
        warnings.filterwarnings("ignore", pat)


def process_rank(local: bool = False) -> int:
    """This process's rank: the job-wide one (``RANK``, which torchrun sets), or with ``local`` the one on this
    machine (``LOCAL_RANK``, which Lightning's launcher sets); each falls back on the other, then 0."""
    first, second = ("LOCAL_RANK", "RANK") if local else ("RANK", "LOCAL_RANK")
    return int(os.environ.get(first, os.environ.get(second, "0")) or 0)


def local_rank() -> int:
    """:func:`process_rank` on this machine."""
    return process_rank(local=True)


@contextmanager
def kept_global_rng():
    """Training seeds Python's, NumPy's and torch's global generators; put the caller's states back afterwards."""
    py, npy, tor = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(tor)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
