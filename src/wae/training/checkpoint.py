"""Atomic, pickle-free-on-load checkpointing for Lightning."""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..errors import WAEError
from ..files import atomic_write_with

__all__ = ["AtomicCheckpointIO", "PeriodicCheckpoint", "EpochSeededSampler", "load_checkpoint_safely"]


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


class EpochSeededSampler(torch.utils.data.Sampler):
    """A random permutation per epoch that depends only on ``(seed, epoch)``, so a resumed run draws the same batches.

    Lightning calls :meth:`set_epoch` at every epoch start; :class:`PeriodicCheckpoint` sets :attr:`skip` on a
    mid-epoch resume so that the batches already trained on are not drawn again.
    """

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch, self.skip = int(n), int(seed), 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        skip, self.skip = self.skip, 0
        return iter(perm[skip:])


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def on_sigterm(handler):
    """``handler`` answers SIGTERM inside the block; the previous handler is restored after. Off the main thread
    Python cannot install signal handlers: the block then runs unchanged."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _samplers(trainer):
    loader = getattr(trainer.fit_loop, "_combined_loader", None)
    for dl in getattr(loader, "flattened", []) or []:
        for s in (getattr(dl, "sampler", None), getattr(getattr(dl, "batch_sampler", None), "sampler", None)):
            if isinstance(s, EpochSeededSampler):
                yield dl, s


class PeriodicCheckpoint(L.Callback):
    """Saves ``last.ckpt`` at every epoch end and every ``minutes`` of training (whichever comes first).

    The checkpoint also carries the global torch RNG state (prior samples, dropout), restored when training
    resumes, and a mid-epoch resume skips the batches already seen when the loader uses :class:`EpochSeededSampler`.

    SIGTERM (a scheduler, ``timeout``, ``kill``) is handled here rather than by Lightning, whose handler runs a
    collective inside the signal handler and under multi-process DDP can deadlock every rank (measured: gloo, 2
    processes, both ranks hung). :meth:`request_stop` only sets a flag; at the next step boundary every rank agrees
    on it (one all-reduce of a scalar, MAX: a signal to any one rank stops all), the finished step is saved and all
    ranks raise ``SIGTERMException`` together. Install it with :func:`on_sigterm` around ``fit`` too (a signal
    during set-up then stops the run before its first step).
    """

    def __init__(self, dirpath: str | Path, minutes: float = 5.0):
        self.path = Path(dirpath) / "last.ckpt"
        self.seconds = minutes * 60.0
        self._last = time.monotonic()
        self._restore: dict | None = None
        self.saved_step: int | None = None
        """global step of the last checkpoint this run wrote (None: none yet)."""
        self.stop_requested = False

    def request_stop(self, signum=None, frame=None) -> None:
        """The SIGTERM handler: sets a flag and nothing else (no I/O, no collectives inside a signal handler)."""
        self.stop_requested = True

    def _stop_if_requested(self, trainer, save: bool) -> None:
        stop = self.stop_requested  # one process: no tensor, no device sync
        if trainer.world_size > 1:  # a signal to any rank stops every rank at this same step
            flag = torch.tensor(float(stop), device=trainer.strategy.root_device)
            stop = bool(trainer.strategy.reduce(flag, reduce_op="max").item())
        if stop:
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            if save and self.saved_step != trainer.global_step:
                self._save(trainer)
            raise SIGTERMException()

    def setup(self, trainer, pl_module, stage) -> None:
        # A process killed (SIGKILL, power loss) inside an atomic write leaves its temporary file behind; the run
        # directory is locked by this run, so any such leftover is stale.
        if trainer.is_global_zero and self.path.parent.is_dir():
            for tmp in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                tmp.unlink(missing_ok=True)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint["wae_rng"] = {"torch": torch.get_rng_state()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._restore = checkpoint.get("wae_rng")

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning registered its SIGTERM handler just before this hook (restored at its teardown): take over
        if _main_thread() and signal.getsignal(signal.SIGTERM) is not self.request_stop:
            signal.signal(signal.SIGTERM, self.request_stop)
        self._stop_if_requested(trainer, save=False)  # a signal during set-up: stop before the first step
        # after the module's on_fit_start (which reseeds) and after the loops' progress is restored
        state, self._restore = self._restore, None
        if state is None:
            return
        t = state.get("torch")
        if isinstance(t, torch.Tensor) and t.dtype == torch.uint8:
            torch.set_rng_state(t.cpu())
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if done >= trainer.num_training_batches:
            done = 0
        for dl, s in _samplers(trainer):
            bs = getattr(dl, "batch_size", None) or 1
            s.skip = int(done) * int(bs)

    def _save(self, trainer) -> None:
        trainer.save_checkpoint(str(self.path))
        self._last = time.monotonic()
        self.saved_step = int(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Ctrl+C (KeyboardInterrupt) can land inside an optimiser step: nothing is saved then, the last whole
        # checkpoint stays. SIGTERM waits for the step to finish, so the state saved here is whole.
        self._stop_if_requested(trainer, save=True)
        if self.seconds > 0 and time.monotonic() - self._last >= self.seconds:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer)
