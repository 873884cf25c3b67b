"""Atomic, pickle-free-on-load checkpointing for Lightning."""
from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..errors import WAEError
from ..io import atomic_write_with

__all__ = ["AtomicCheckpointIO", "PeriodicCheckpoint", "load_checkpoint_safely"]


def load_checkpoint_safely(path: str | Path, map_location=None) -> dict:
    """``torch.load(..., weights_only=True)``: tensors and plain containers only, no code runs on load."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise WAEError(f"checkpoint {path} not found") from None
    except Exception as e:  # noqa: BLE001 - unpickling errors have many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WAEError(f"refusing to load checkpoint {path}: not a plain weights file ({first[:200]})") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes to a temporary file and renames (a kill never leaves a half-written checkpoint);
    loads with ``weights_only=True`` (a planted pickle payload is refused, not executed)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_write_with(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_checkpoint_safely(path, map_location or (lambda storage, loc: storage))


class PeriodicCheckpoint(L.Callback):
    """Saves ``last.ckpt`` at every epoch end and every ``minutes`` of training (whichever comes first)."""

    def __init__(self, dirpath: str | Path, minutes: float = 5.0):
        self.path = Path(dirpath) / "last.ckpt"
        self.seconds = minutes * 60.0
        self._last = time.monotonic()

    def _save(self, trainer) -> None:
        trainer.save_checkpoint(str(self.path))
        self._last = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.seconds > 0 and time.monotonic() - self._last >= self.seconds:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer)
