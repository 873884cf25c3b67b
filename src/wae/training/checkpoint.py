"""Atomic, pickle-free-on-load checkpointing for Lightning."""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..errors import WAEError
from ..files import atomic_write_with

__all__ = ["AtomicCheckpointIO", "PeriodicCheckpoint", "EpochSeededSampler", "load_checkpoint_safely",
           "at_epoch_boundary"]


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


def _zero_current(progress) -> None:
    """Zero the per-epoch ("current") counters of a Lightning progress state, as a loop does when an epoch starts."""
    if not isinstance(progress, dict):
        return
    for key, value in progress.items():
        if key == "current" and isinstance(value, dict):
            for k in value:
                value[k] = 0
        elif isinstance(value, dict):
            _zero_current(value)
    if "is_last_batch" in progress:
        progress["is_last_batch"] = False


def at_epoch_boundary(checkpoint: dict) -> bool:
    """Rewrite ``checkpoint`` (in place) if it was taken at an epoch boundary; True if it was.

    Lightning resumes such checkpoints inexactly: one saved at an epoch's end resumes into an epoch of a single batch
    whenever ``max_steps`` is set (its loop then always counts as "restarting"), and the per-epoch batch counters of
    the finished epoch are carried into the next one. The boundary checkpoints this module writes (at the next
    epoch's start and at the end of training) and those of older versions (at an epoch's end) are all turned into the
    state of a loop between two epochs: ``N`` epochs done, no batch of epoch ``N`` drawn, every per-epoch counter 0.
    Mid-epoch checkpoints are left alone.
    """
    try:
        fit = checkpoint["loops"]["fit_loop"]
        ep = fit["epoch_progress"]
        bp = fit["epoch_loop.batch_progress"]
        tot = ep["total"]
        r, s, p, c = (int(tot[k]) for k in ("ready", "started", "processed", "completed"))
    except (KeyError, TypeError, ValueError):
        return False
    cur = bp.get("current", {}) if isinstance(bp, dict) else {}
    last = bool(bp.get("is_last_batch")) if isinstance(bp, dict) else False
    if r == s + 1 and s == p == c:  # saved in on_train_epoch_start: epoch s has not begun
        done = s
    elif r == s == p == c + 1 and last:  # saved in on_train_epoch_end (older versions): epoch c has ended
        done = p
    elif r == s == p == c and (last or not any(cur.values())):  # end of training at an epoch's end
        done = p
    elif r == s == p == c >= 1 and not last and any(cur.values()):
        # end of training in the middle of an epoch (max_steps): Lightning counts that epoch as finished, and a
        # resume (with a larger budget) would start the next one; make it a mid-epoch checkpoint instead, whose
        # remaining batches the resumed run draws (the sampler skips the ones already seen)
        for part in (ep.get("total"), ep.get("current")):
            if isinstance(part, dict):
                for k in ("processed", "completed"):
                    if k in part:
                        part[k] = int(part[k]) - 1
        return False
    else:
        return False
    for part in (ep.get("total"), ep.get("current")):
        if isinstance(part, dict):
            for k in ("ready", "started", "processed", "completed"):
                if k in part:
                    part[k] = done
    for key, state in fit.items():
        if key.startswith("epoch_loop.") and isinstance(state, dict) and "val_loop" not in key:
            _zero_current(state)
    return True


class PeriodicCheckpoint(L.Callback):
    """Saves ``last.ckpt`` at every epoch boundary, every ``minutes`` of training and at the end of training.

    The epoch-boundary checkpoint is written when the next epoch starts (after every end-of-epoch hook, learning-rate
    schedule step and evaluation of the finished epoch) and is rewritten on load by :func:`at_epoch_boundary`, so a
    resumed run continues exactly; a periodic save due on an epoch's last batch is left to that boundary. The
    checkpoint also carries the global torch RNG state (prior samples, dropout; on a GPU the device's too), restored
    when training resumes, and a mid-epoch resume skips the batches already seen when the loader uses
    :class:`EpochSeededSampler`.

    SIGTERM (a scheduler, ``timeout``, ``kill``) is handled here rather than by Lightning, whose handler runs a
    collective inside the signal handler and under multi-process DDP can deadlock every rank (measured: gloo, 2
    processes, both ranks hung). :meth:`request_stop` only sets a flag; at the next step boundary every rank agrees
    on it (one all-reduce of a scalar, MAX: a signal to any one rank stops all), the finished step is saved and all
    ranks raise ``SIGTERMException`` together (on an epoch's last step: at the epoch boundary, after its end-of-epoch
    work, so that the checkpoint is a boundary one). Install it with :func:`on_sigterm` around ``fit`` too (a signal
    during set-up then stops the run before its first step).
    """

    def __init__(self, dirpath: str | Path, minutes: float = 5.0):
        self.path = Path(dirpath) / "last.ckpt"
        self.seconds = minutes * 60.0
        self._last = time.monotonic()
        self._restore: dict | None = None
        self._loaded_step: int | None = None
        self.saved_step: int | None = None
        """global step of the last checkpoint this run wrote (None: none yet)."""
        self.stop_requested = False
        self.offset: dict | None = None
        """What the run did before its trainer started (the kept restart's steps and the candidates' seconds and
        objectives), written into every checkpoint so that a resume counts it too."""

    def request_stop(self, signum=None, frame=None) -> None:
        """The SIGTERM handler: sets a flag and nothing else (no I/O, no collectives inside a signal handler)."""
        self.stop_requested = True

    def _agreed_stop(self, trainer) -> bool:
        stop = self.stop_requested  # one process: no tensor, no device sync
        if trainer.world_size > 1:  # a signal to any rank stops every rank at this same step
            flag = torch.tensor(float(stop), device=trainer.strategy.root_device)
            stop = bool(trainer.strategy.reduce(flag, reduce_op="max").item())
        return stop

    def _stop_if_requested(self, trainer, save: bool) -> None:
        if self._agreed_stop(trainer):
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            if save:
                self._save_once(trainer)
            raise SIGTERMException()

    def setup(self, trainer, pl_module, stage) -> None:
        # A process killed (SIGKILL, power loss) inside an atomic write leaves its temporary file behind; the run
        # directory is locked by this run, so any such leftover is stale.
        if trainer.is_global_zero and self.path.parent.is_dir():
            for tmp in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                tmp.unlink(missing_ok=True)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        rng = {"torch": torch.get_rng_state()}
        dev = getattr(trainer.strategy, "root_device", None)
        if dev is not None and dev.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(dev)
        checkpoint["wae_rng"] = rng
        if self.offset is not None:
            checkpoint["wae_offset"] = dict(self.offset)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # called before Lightning restores its loops from the same dict
        at_epoch_boundary(checkpoint)
        self._restore = checkpoint.get("wae_rng")
        step = checkpoint.get("global_step")
        self._loaded_step = int(step) if isinstance(step, int) else None

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning registered its SIGTERM handler just before this hook (restored at its teardown): take over
        if _main_thread() and signal.getsignal(signal.SIGTERM) is not self.request_stop:
            signal.signal(signal.SIGTERM, self.request_stop)
        self._stop_if_requested(trainer, save=False)  # a signal during set-up: stop before the first step
        # a resumed run whose time budget is already spent trains no further step (Lightning's Timer only looks
        # after a step)
        for cb in trainer.callbacks:
            left = cb.time_remaining() if isinstance(cb, Timer) else None
            if left is not None and left <= 0:
                trainer.should_stop = True
        # after the module's on_fit_start (which reseeds) and after the loops' progress is restored
        state, self._restore = self._restore, None
        if state is None:
            return
        t = state.get("torch")
        if isinstance(t, torch.Tensor) and t.dtype == torch.uint8:
            torch.set_rng_state(t.cpu())
        c = state.get("cuda")
        dev = getattr(trainer.strategy, "root_device", None)
        if isinstance(c, torch.Tensor) and c.dtype == torch.uint8 and dev is not None and dev.type == "cuda":
            torch.cuda.set_rng_state(c.cpu(), dev)
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

    def _save_once(self, trainer) -> None:
        """Save unless this step is already on disk (written by this run, or the one it resumed from)."""
        step = int(trainer.global_step)
        if step > 0 and step != self.saved_step and step != self._loaded_step:
            self._save(trainer)

    @staticmethod
    def _ends_epoch_or_training(trainer) -> bool:
        loop = trainer.fit_loop.epoch_loop
        steps_done = trainer.max_steps is not None and 0 <= trainer.max_steps <= trainer.global_step
        return bool(loop.batch_progress.is_last_batch or loop._num_ready_batches_reached() or steps_done)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Ctrl+C (KeyboardInterrupt) can land inside an optimiser step: nothing is saved then, the last whole
        # checkpoint stays. SIGTERM waits for the step to finish, so the state saved here is whole.
        if self._ends_epoch_or_training(trainer):
            return  # the epoch boundary (or the end of training) saves and answers a stop request
        self._stop_if_requested(trainer, save=True)
        if self.seconds > 0 and time.monotonic() - self._last >= self.seconds:
            self._save(trainer)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # the previous epoch's end-of-epoch work is done: this is the epoch-boundary checkpoint
        stop = self._agreed_stop(trainer)
        self._save_once(trainer)
        if stop:
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            raise SIGTERMException()

    def on_train_end(self, trainer, pl_module) -> None:
        # the trained state, for a `--resume` that only has the final evaluation left; a stop request that came
        # during the last epoch's end is answered by the caller (every rank agrees on it here)
        self.stop_requested = self._agreed_stop(trainer)
        self._save_once(trainer)
