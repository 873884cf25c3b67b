"""``wae train``: a whole run — data, model, Lightning fit, export, evaluation, figures, report."""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import torch

from ..config import RunConfig, _short
from ..data.source import as_batch
from ..data.splits import RunData, load_run_data
from ..errors import ConfigError, TrainingError, TrainingStopped, WAEError
from ..files import atomic_write_text
from ..models import AutoEncoderModel, create_model
from ..presets import load_run_config
from ..serialization import save_model
from .callbacks import EpochEvaluator
from .checkpoint import AtomicCheckpointIO, EpochSeededSampler, PeriodicCheckpoint, load_checkpoint_safely, on_sigterm
from .module import LitAutoEncoder

__all__ = ["train", "prepare", "build_trainer", "fit", "finalise", "fit_in_memory", "train_loader", "Prepared",
           "prepare_run_dir", "load_data_for", "refit_data", "ensemble_sample", "REFIT_SAMPLE", "ENSEMBLE_SAMPLE",
           "check_output_dir", "check_run_dir", "RunLock", "SAFE_ON_RESUME", "StepCount", "StartProgress", "Starts"]

log = logging.getLogger("wae")


def _parse_devices(v: str):
    v = str(v).strip()
    if v == "auto":
        return "auto"
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return [int(s) for s in v.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"train.devices must be 'auto', a count or a list like 0,1; got {v!r}") from None


class RunLock:
    """An exclusive lock file in the run directory: a second concurrent run in the same directory is refused.

    The file holds the owner's pid. A lock whose pid is dead is stale and taken over; one whose pid is alive but is
    not a wae run (its command line, where the system shows it, names no ``wae``) is reported with how to clear it.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.fd = None

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            pid = None
            try:
                pid = int(self.path.read_text()[:32].strip() or 0)
            except (OSError, ValueError):
                pass
            if pid and pid != os.getpid() and _pid_alive(pid) or pid == os.getpid():
                cmd = _cmdline(pid)
                clear = f"if no run uses {self.path.parent}, delete {self.path} and retry"
                if cmd is not None and not _looks_like_wae(cmd):
                    raise WAEError(f"{self.path.parent} is in use according to {self.path}: its pid {pid} is alive but "
                                   f"is not a wae run ({_short(cmd[:80])}; a stale lock whose pid was reused?); "
                                   + clear) from None
                raise WAEError(f"{self.path.parent} is in use by another run (pid {pid}); pick another --out, or "
                               + clear) from None
            # stale lock from a killed process: take it over
            self.path.unlink(missing_ok=True)
            self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            self.path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _cmdline(pid: int) -> str | None:
    """The command line of process ``pid`` where the system shows it (Linux /proc), else None."""
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            cmd = f.read(4096).replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except (OSError, ValueError):
        return None
    return cmd or None  # empty: a kernel thread, a zombie, or a process not yet started


def _looks_like_wae(cmd: str) -> bool:
    """Whether a command line may be a wae run: the ``wae`` command, ``-m wae``, or Python running a script or code that
    uses wae (a library caller, a test)."""
    return "wae" in cmd.lower() or "python" in cmd.lower()


def check_output_dir(out: str | Path) -> Path:
    """Refuse, without creating or writing anything, an output directory that cannot be created or written."""
    run_dir = Path(out)
    probe = run_dir
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise WAEError(f"cannot write to output directory {run_dir}: {probe} is not a directory")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise WAEError(f"cannot write to output directory {run_dir}: permission denied on {probe}")
    return run_dir


def prepare_run_dir(out: str | Path, resume: bool = False) -> Path:
    """Create the run directory and check that it can be written (the first write of a run: call it only once the
    config, data and model have been checked)."""
    run_dir = Path(out)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise WAEError(f"cannot write to output directory {run_dir}: {e.strerror or e}") from None
    return run_dir


SAFE_ON_RESUME = frozenset({
    "train.epochs", "train.max_steps", "train.max_minutes", "train.checkpoint_every_minutes", "train.progress",
    "train.log_every", "train.figures", "train.sample_metrics", "train.eval_every_epochs", "train.on_nan",
    "train.accelerator", "train.devices", "train.strategy", "train.num_nodes", "train.compile", "train.channels_last",
    "train.deterministic", "data.data_dir", "data.eval_dataset", "data.eval_data_dir", "data.eval_limit",
    "data.evaluate_test", "data.workers"})
"""Config keys a ``--resume`` may change: budgets, where and how the run is executed, logging and the final
evaluation. Any other change (the model, the data, the optimiser, the seed, ...) would train something else and is
refused."""

_RUN_OUTPUTS = ("model.safetensors", "model.yaml", "metrics.json", "report.md", "report.html", "config.yaml")


def _flat(cfg: RunConfig) -> dict:
    return {f"{sec}.{k}": v for sec, sub in cfg.to_dict().items() for k, v in sub.items()}


def _diff(keys, old: dict, new: dict, limit: int = 6) -> str:
    missing = "(unset)"
    parts = [f"{k} {_short(old.get(k, missing))} → {_short(new.get(k, missing))}" for k in keys[:limit]]
    return ", ".join(parts) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def check_run_dir(run_dir: str | Path, cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> list[str]:
    """What ``run_dir`` holds against what this run would do, read-only: refuses (one line) to replace a finished run,
    a run of another model or one with a checkpoint unless ``overwrite``; on ``resume``, a config that differs from
    the run's in keys outside :data:`SAFE_ON_RESUME` (the refusal lists the keys with both values). Returns notes on
    the changes a resume applies."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ConfigError("--resume continues the run in the output directory and --overwrite replaces it; pass one")
    if not run_dir.is_dir():
        return []
    cfg_path = run_dir / "config.yaml"
    saved, unreadable = None, None
    if cfg_path.is_file():
        try:
            saved = load_run_config(cfg_path)
        except WAEError as e:
            unreadable = str(e)
    if resume:
        if unreadable is not None:
            raise WAEError(f"--resume: {cfg_path} cannot be read ({unreadable[:200]}); train into another --out")
        if saved is None:
            return []
        old, new = _flat(saved), _flat(cfg)
        changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if saved.model != cfg.model:
            raise WAEError(f"--resume: {cfg_path} describes a different model ({saved.model}, not {cfg.model}); "
                           "use another --out")
        refused = [k for k in changed if k not in SAFE_ON_RESUME]
        if refused:
            raise ConfigError(f"--resume: these settings differ from {cfg_path}: {_diff(refused, old, new)}; they "
                              "change what is trained, so the run cannot continue with them: give the run's settings "
                              f"again (e.g. --config {cfg_path}) or train into another --out")
        if changed:
            return [f"--resume: applying {_diff(changed, old, new)} (changed from {cfg_path}, which is updated)"]
        return []
    if overwrite:
        return []
    what = None
    name = saved.model if saved is not None else None
    if (run_dir / "model.safetensors").exists():
        what = f"a finished run{f' of {name}' if name else ''} (model.safetensors)"
    elif unreadable is not None:
        what = "a run whose config.yaml cannot be read"
    elif saved is not None and saved.model != cfg.model:
        what = f"a run of another model ({saved.model})"
    elif (run_dir / "checkpoints" / "last.ckpt").exists():
        what = f"an unfinished run{f' of {name}' if name else ''} with a checkpoint (--resume continues it)"
    if what:
        raise WAEError(f"{run_dir} holds {what}; pass --overwrite to replace it, or pick another --out")
    return []


def _clear_previous_run(run_dir: Path) -> None:
    """Remove the outputs of the run that a new (not resumed) run replaces, so that nothing of the old one (metrics,
    logs, checkpoint, figures) is mixed with the new one. Only the files a run writes are touched."""
    ck = run_dir / "checkpoints"
    if not any((run_dir / f).exists() for f in ("config.yaml", "model.safetensors")) and not (ck / "last.ckpt").exists():
        return
    for name in _RUN_OUTPUTS:
        (run_dir / name).unlink(missing_ok=True)
    for f in [ck / "last.ckpt", *ck.glob(".last.ckpt.*.tmp")]:
        f.unlink(missing_ok=True)
    for v in (run_dir / "logs").glob("version_*"):
        if v.is_dir():
            shutil.rmtree(v, ignore_errors=True)
    for f in (run_dir / "figures").glob("*.png"):
        f.unlink(missing_ok=True)
    for d in (ck, run_dir / "logs", run_dir / "figures"):
        with contextlib.suppress(OSError):
            d.rmdir()  # only when empty


def load_data_for(cfg: RunConfig, need_test: bool | None = None) -> RunData:
    """The :class:`~wae.data.splits.RunData` (train, val, test) of a run config."""
    return load_run_data(cfg.data, cfg.train.seed, need_test=need_test)


def _check_resume_budget(last: Path, tc) -> dict | None:
    """Refuse (before anything is written) a resume whose epoch or step budget is below what the checkpoint has done;
    return what the run did before its trainer started (:attr:`PeriodicCheckpoint.offset`), if anything."""
    c = load_checkpoint_safely(last, map_location="cpu")
    offset = _offset_of(c)
    try:
        epochs_done = int(c["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
        steps_done = int(c["global_step"]) + (offset or {}).get("steps", 0)
    except (KeyError, TypeError, ValueError):
        return None  # not a checkpoint of ours: the engine will say what is wrong with it
    if tc.epochs >= 0 and tc.epochs < epochs_done:
        raise ConfigError(f"--resume: the checkpoint {last} has trained {epochs_done} epochs, more than "
                          f"train.epochs={tc.epochs}; pass --epochs {epochs_done} or more to continue it")
    if tc.max_steps > 0 and tc.max_steps < steps_done:
        raise ConfigError(f"--resume: the checkpoint {last} has trained {steps_done} steps, more than "
                          f"train.max_steps={tc.max_steps}; raise --max-steps to continue it")
    return offset


def _offset_of(c) -> dict | None:
    """A checkpoint's ``wae_offset`` (steps, seconds, losses, targets), type-checked; None when absent or
    malformed (targets: None when absent or malformed)."""
    o = c.get("wae_offset") if isinstance(c, dict) else None
    if not isinstance(o, dict):
        return None
    steps, seconds, losses = o.get("steps"), o.get("seconds"), o.get("losses")
    if not (isinstance(steps, int) and steps >= 0 and isinstance(seconds, (int, float)) and seconds >= 0):
        return None
    if not (losses is None or isinstance(losses, list) and all(isinstance(v, (int, float)) for v in losses)):
        losses = None
    targets = o.get("targets")
    if not (isinstance(targets, list) and all(isinstance(v, int) for v in targets)):
        targets = None
    other, pre = o.get("other_steps", 0), o.get("pretrain_steps", 0)  # absent in checkpoints of earlier versions
    other = other if isinstance(other, int) and other >= 0 else 0
    pre = pre if isinstance(pre, int) and pre >= 0 else 0
    return {"steps": steps, "seconds": float(seconds), "losses": losses, "targets": targets, "other_steps": other,
            "pretrain_steps": pre}


@dataclass
class Prepared:
    """Everything a run needs before the engine starts: its config, data, model, Lightning module and loader."""

    cfg: RunConfig
    data: RunData
    lit: LitAutoEncoder
    loader: torch.utils.data.DataLoader
    callbacks: list
    run_dir: Path | None = None
    ckpt: PeriodicCheckpoint | None = None
    resume_from: str | None = None
    saved_config: str | None = None
    """The resumed run's config text, put back if the engine refuses the checkpoint."""
    resume: bool = False
    lock: RunLock | None = None
    """The run directory's lock, held from the first write until :meth:`close`."""
    notes: list[str] | None = None
    """Lines for the user (e.g. the config changes a resume applies)."""
    steps_done: int = 0
    """Steps already taken before this run's trainer starts (the kept restart's), counted in the budget."""
    seconds_used: float = 0.0
    """Wall time already spent before this run's trainer starts (choosing among restarts)."""
    restart_losses: list[float] | None = None
    other_steps: int = 0
    """Optimiser steps of the discarded restart candidates (not in ``max_steps``; in ``train/steps``)."""
    pretrain_done: int = 0
    """Pre-training steps taken before this run's trainer starts (every restart candidate's)."""

    def close(self) -> None:
        """Release the run directory's lock (idempotent)."""
        if self.lock is not None:
            self.lock.__exit__(None, None, None)
            self.lock = None

    @property
    def model(self) -> AutoEncoderModel:
        return self.lit.model

    @property
    def last(self) -> Path | None:
        return self.run_dir / "checkpoints" / "last.ckpt" if self.run_dir is not None else None


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                 "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LightningModule.*has parameters that were not used.*")
    warnings.filterwarnings("ignore", ".*Checkpoint directory.*exists and is not empty.*")


def _rank() -> int:
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")) or 0)


def prepare(cfg: RunConfig, run_dir: str | Path | None = None, resume: bool = False, data: RunData | None = None,
            callbacks=None, init_state: dict | None = None, overwrite: bool = True, quiet: bool = False) -> Prepared:
    """Validate the config, load the data (unless given), build the model, its Lightning module and the loader.

    With ``run_dir`` the run is a run directory (config written, checkpoints, logs; ``resume`` continues its last
    checkpoint); without, training happens in memory only (the estimator). Nothing is written before the config,
    the data, the model and what the directory holds (:func:`check_run_dir`; ``overwrite=False`` refuses to replace
    a previous run, as the command line does without ``--overwrite``) have been checked. A run directory is locked
    (:class:`RunLock`) from then on: release it with :meth:`Prepared.close` (``train`` does). ``quiet``: no
    progress lines for the restart candidates and no note on the kept one.
    """
    cfg.validate()
    lead = _rank() == 0 and "LOCAL_RANK" not in os.environ  # the process that owns the run directory
    if run_dir is not None and _rank() == 0:
        check_output_dir(run_dir)
        check_run_dir(run_dir, cfg, resume, overwrite)  # read-only: fail before the data are loaded
    if data is None:
        data = load_data_for(cfg)
    train_ds = data.train
    tc = cfg.train
    n = len(train_ds)
    if n < tc.batch_size:
        raise ConfigError(f"train.batch_size {tc.batch_size} exceeds the {n} training examples")
    L.seed_everything(tc.seed, workers=True, verbose=False)
    try:
        model = create_model(cfg.model, train_ds.shape, cfg.model_config)
        if init_state is not None:
            model.load_state_dict(init_state)
    except (RuntimeError, ValueError) as e:  # a network that cannot take these examples (too small for its stack)
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot build {cfg.model} for examples of shape {tuple(train_ds.shape)}: {first}") from None
    # only now, with the config, data and model checked, is anything written into the run directory
    saved_text = resume_from = offset = None
    ckpt = lock = None
    notes: list[str] = []
    cbs = list(callbacks or [])
    if run_dir is not None:
        run_dir = prepare_run_dir(run_dir, resume)
        if lead:
            lock = RunLock(run_dir).__enter__()
        try:
            last = run_dir / "checkpoints" / "last.ckpt"
            if _rank() == 0:
                notes = check_run_dir(run_dir, cfg, resume, overwrite)  # again, under the lock
            if resume and (run_dir / "config.yaml").exists():
                saved_text = (run_dir / "config.yaml").read_text()
            if resume and last.exists():
                offset = _check_resume_budget(last, cfg.train)
                resume_from = str(last)
            if _rank() == 0:
                if not resume:
                    _clear_previous_run(run_dir)
                atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        except BaseException:
            if lock is not None:
                lock.__exit__(None, None, None)
            raise
        ckpt = PeriodicCheckpoint(run_dir / "checkpoints", cfg.train.checkpoint_every_minutes)
        cbs.insert(0, ckpt)
    lit = LitAutoEncoder(model, tc, train_ds.x)
    steps_done, seconds_used, losses, targets, other_steps, pretrain_done = 0, 0.0, None, None, 0, 0
    if offset is not None:  # a resumed run that had chosen among restarts: their steps and time still count
        steps_done, seconds_used, losses = offset["steps"], offset["seconds"], offset["losses"]
        targets, other_steps, pretrain_done = offset.get("targets"), offset["other_steps"], offset["pretrain_steps"]
        if getattr(cfg.model_config, "pseudo_label_weight", 0) and targets is not None and len(targets) == n:
            lit.targets = torch.as_tensor(targets, dtype=torch.long)
    elif tc.restarts > 1 and resume_from is None and init_state is None:
        t0 = time.time()
        try:
            starts = select_start(cfg, data, quiet=quiet)
        except BaseException:
            if lock is not None:
                lock.__exit__(None, None, None)
            raise
        losses, targets = starts.losses, starts.targets
        model.load_state_dict(starts.state)
        if targets is not None and getattr(cfg.model_config, "pseudo_label_weight", 0):
            lit.targets = torch.as_tensor(targets, dtype=torch.long)
        lit.skip_pretrain = True
        kept = losses.index(min(losses))
        steps_done, seconds_used = starts.steps[kept], time.time() - t0
        other_steps, pretrain_done = sum(starts.steps) - steps_done, sum(starts.pretrain_steps)
        sampled = RESTART_CRITERIA[tc.restart_select].combine is _ensemble_combine and \
            ensemble_sample(train_ds, tc.seed) is not None
        if not quiet and _rank() == 0:
            print(f"kept start {kept} of {tc.restarts} after {tc.candidate_steps} steps each "
                  f"({RESTART_CRITERIA[tc.restart_select].describe}"
                  + (f", on a random sample of {ENSEMBLE_SAMPLE:,} of the {n:,} examples streamed from disk"
                     if sampled else "") + ", lowest kept: "
                  f"{', '.join(f'{v:.4f}' for v in losses)}); {_clock(seconds_used)} for the starts", flush=True)
    if ckpt is not None and steps_done:
        ckpt.offset = {"steps": steps_done, "seconds": seconds_used, "losses": losses,
                       "targets": None if targets is None else [int(v) for v in targets],
                       "other_steps": other_steps, "pretrain_steps": pretrain_done}
    loader = train_loader(train_ds, cfg)
    if tc.eval_every_epochs > 0:
        split, curve_ds = data.curve  # the validation split (never the test split)
        k = min(len(curve_ds), 2000)
        cbs.append(EpochEvaluator(curve_ds.x[:k], curve_ds.y[:k] if curve_ds.y is not None else None,
                                  tc.eval_every_epochs, prefix=f"{split}/"))
    return Prepared(cfg, data, lit, loader, cbs, Path(run_dir) if run_dir is not None else None, ckpt, resume_from,
                    saved_text, resume, lock, notes, steps_done, seconds_used, losses, other_steps, pretrain_done)


def train_loader(train_ds, cfg: RunConfig) -> torch.utils.data.DataLoader:
    """The training batches of ``train_ds``: indices into the data held on the device (in memory), or, for data
    streamed from disk, ``(indices, raw rows)`` read in ``data.workers`` DataLoader workers (the rows become
    float32 on the device, :meth:`~wae.data.source.Source.decode`).

    One process: the shuffle depends only on (seed, epoch), so a run resumed mid-epoch draws exactly the remaining
    batches; its own generator, so creating each epoch's iterator draws nothing from the global RNG (which the
    checkpoint carries) and a run resumed at an epoch boundary sees the same random stream. Several processes:
    Lightning puts a DistributedSampler (seeded by ``train.seed``) in, and each process reads its own part of
    each epoch."""
    tc, n = cfg.train, len(train_ds)
    kw: dict = {}
    rows = torch.arange(n)
    if train_ds.streamed:
        workers = train_ds.x.workers if cfg.data.workers is None else cfg.data.workers
        rows = train_ds.x.rows()
        kw = {"collate_fn": as_batch, "num_workers": workers, "persistent_workers": workers > 0,
              "pin_memory": str(tc.accelerator) in ("gpu", "cuda", "auto") and torch.cuda.is_available()}
    g = torch.Generator().manual_seed(tc.seed)
    if _single_process(tc):
        return torch.utils.data.DataLoader(rows, batch_size=tc.batch_size, sampler=EpochSeededSampler(n, tc.seed),
                                           drop_last=True, generator=g, **kw)
    return torch.utils.data.DataLoader(rows, batch_size=tc.batch_size, shuffle=True, drop_last=True, generator=g,
                                       **kw)


class _LossTracker(L.Callback):
    """Records the training objective of every step."""

    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.losses.append(float(loss))


def restart_seed(seed: int, i: int) -> int:
    """The seed of candidate start i (the run's own seed for the first)."""
    return seed if i == 0 else (seed * 7919 + 104729 * i) % (2 ** 32)


def _fixed_batches(x: torch.Tensor, batch_size: int, n: int, seed: int, dev: torch.device):
    """The same ``n`` examples of ``x`` (a seeded permutation) in batches of ``batch_size``, on ``dev``."""
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    for j in range(0, len(idx), batch_size):
        yield x[idx[j:j + batch_size]].to(dev)


def fixed_cluster_probs(model, x: torch.Tensor, batch_size: int = 500, n: int = 2000, seed: int = 0):
    """q(k|x) (evaluation mode, on the CPU) of the same ``n`` examples of ``x`` whatever the model, or None for a
    model without clusters."""
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for xb in _fixed_batches(x, batch_size, n, seed, next(model.parameters()).device):
                p = model.cluster_probs(xb)
                if p is None:
                    return None
                out.append(p.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def mean_confidence(model, x: torch.Tensor, batch_size: int = 500, n: int = 2000, seed: int = 0) -> float | None:
    """The mean over the same ``n`` examples of ``x`` of max_k q(k|x) (evaluation mode), or None for a model without
    clusters. Label-free: how decisively the model assigns the data to its clusters."""
    p = fixed_cluster_probs(model, x, batch_size, n, seed)
    return None if p is None else float(p.max(dim=1).values.mean())


def _needs_clusters(value, cfg: RunConfig):
    """``value`` (a criterion of a restart candidate), refused when it is None: a model without clusters."""
    if value is None:
        raise ConfigError(f"train.restart_select={cfg.train.restart_select} needs a model with clusters; "
                          f"{cfg.model} has none (use tail)")
    return value


def _tail(model, tracker, x, cfg) -> float:
    tail = tracker.losses[-max(1, len(tracker.losses) // 4):]
    return sum(tail) / len(tail)


def all_assignments(model, x: torch.Tensor, batch_size: int = 500):
    """argmax_k q(k|x) of every example of ``x``, in order (evaluation mode; NumPy), or None for a model without
    clusters."""
    was_training = model.training
    dev = next(model.parameters()).device
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for j in range(0, len(x), batch_size):
                p = model.cluster_probs(x[j:j + batch_size].to(dev))
                if p is None:
                    return None
                out.append(p.argmax(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


def _ensemble_combine(assigned: list, cfg: RunConfig):
    """Every candidate's minus NMI with the consensus partition of all of them, and that partition."""
    from ..evaluation.clustering import consensus_partition, nmi

    k = int(getattr(cfg.model_config, "num_components", 0) or max(int(a.max()) for a in assigned) + 1)
    consensus = consensus_partition(assigned, k, seed=cfg.train.seed)
    return [-nmi(a, consensus) for a in assigned], consensus


@dataclass(frozen=True)
class RestartCriterion:
    """One ``train.restart_select`` rule: ``value(model, tracker, x, cfg)`` of each trained candidate (``tracker``
    its per-step losses, ``x`` the training data); ``combine(values, cfg)`` maps all candidates' values, once every
    candidate is in, to their losses and a partition of the training data for ``model.pseudo_label_weight`` (or
    None) — without ``combine`` the values are the losses. The lowest loss is kept; ``describe`` is for the notes."""

    describe: str
    value: Callable
    combine: Callable | None = None


RESTART_CRITERIA: dict[str, RestartCriterion] = {
    "tail": RestartCriterion("training objective over the last quarter of steps", _tail),
    "confidence": RestartCriterion(
        "minus the mean max_k q(k|x)",
        lambda model, tracker, x, cfg: -_needs_clusters(mean_confidence(model, x, seed=cfg.train.seed), cfg)),
    "ensemble": RestartCriterion("minus the NMI of its assignments with the starts' consensus partition",
                                 lambda model, tracker, x, cfg: _needs_clusters(all_assignments(model, x), cfg),
                                 _ensemble_combine),
}
"""``train.restart_select`` → its rule (the names ``config.RESTART_SELECT`` accepts)."""


class Starts(NamedTuple):
    """What :func:`select_start` returns."""

    state: dict
    """The kept candidate's state dict."""
    losses: list[float]
    """Every candidate's value under ``restart_select`` (the lowest is kept)."""
    targets: np.ndarray | None
    """The consensus partition in the kept candidate's component ids (``ensemble``), else None."""
    steps: list[int]
    """Every candidate's optimiser steps."""
    pretrain_steps: list[int]
    """Every candidate's pre-training steps."""


def select_start(cfg: RunConfig, data: RunData, quiet: bool = True) -> Starts:
    """Train ``cfg.train.restarts`` candidate starts for ``candidate_steps`` steps each (in memory, seeds from
    :func:`restart_seed`) and return the state of the one with the lowest loss under ``restart_select``
    (:data:`RESTART_CRITERIA`), with every candidate's loss: the mean training objective over its last quarter of
    steps (``tail``), minus :func:`mean_confidence` on the same 2,000 training examples (``confidence``, mixture
    models) or minus the NMI of its assignments of all training data with the candidates' consensus partition
    (``ensemble``). Third: that consensus in the kept candidate's component ids (``ensemble``; the targets of
    ``model.pseudo_label_weight``), else None. Also every candidate's optimiser and pre-training steps
    (:class:`Starts`). Label-free: no label is read. Unless ``quiet``, a :class:`StartProgress` line says which start
    runs, its steps and the time elapsed.
    """
    from ..evaluation.clustering import align_partition

    tc = cfg.train
    crit = RESTART_CRITERIA[tc.restart_select]
    best, values, states, steps, pre = None, [], [], [], []
    x, sample = data.train.x, ensemble_sample(data.train, tc.seed) if crit.combine is _ensemble_combine else None
    if sample is not None:  # streamed data: the starts' consensus is that of a bounded sample
        x = x.take(sample)
    t0 = time.monotonic()
    if not quiet and _rank() == 0:
        print(f"{tc.restarts} candidate starts of {tc.candidate_steps} steps each; kept: the lowest "
              f"{crit.describe}", flush=True)
    for i in range(tc.restarts):
        c = copy.deepcopy(cfg)
        c.train.seed = restart_seed(tc.seed, i)
        c.train.max_steps, c.train.restarts, c.train.max_minutes = tc.candidate_steps, 1, None
        c.train.eval_every_epochs, c.train.progress = 0, False
        c.train.restart_select = "tail"
        if hasattr(c.model_config, "pseudo_label_weight"):
            c.model_config.pseudo_label_weight = 0.0  # candidates have no targets yet
        tracker = _LossTracker()
        cbs = [tracker] if quiet or _rank() != 0 else \
            [tracker, StartProgress(f"start {i + 1} of {tc.restarts}", tc.candidate_steps, t0=t0)]
        model, count = fit_in_memory(c, data, callbacks=cbs, refit=False)
        steps.append(count.total)
        pre.append(count.pretrain)
        values.append(crit.value(model, tracker, x, cfg))
        if crit.combine is not None:  # scored once every candidate is in: keep them all
            states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        elif values[-1] == min(values):
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    losses, partition = (values, None) if crit.combine is None else crit.combine(values, cfg)
    kept = losses.index(min(losses))
    if states:
        best = states[kept]
    targets = None if partition is None else align_partition(partition, values[kept])
    if targets is not None and sample is not None:  # the examples outside the sample get no target (−1)
        full = np.full(len(data.train), -1, dtype=np.int64)
        full[sample.numpy()] = targets
        targets = full
    return Starts(best, losses, targets, steps, pre)


ENSEMBLE_SAMPLE = 20_000
"""Examples of streamed training data whose assignments the ``ensemble`` restart criterion compares (the starts'
consensus partition; the others get no ``pseudo_label_weight`` target)."""

REFIT_SAMPLE = 50_000
"""Examples of streamed training data a model's :meth:`~wae.models.base.AutoEncoderModel.after_fit` (e.g. GM-WAE's
component refit) sees: a random sample."""


def ensemble_sample(train_ds, seed: int) -> torch.Tensor | None:
    """The (sorted) examples of streamed training data the ``ensemble`` criterion uses when there are more than
    :data:`ENSEMBLE_SAMPLE`; None otherwise (all of them)."""
    if not train_ds.streamed or len(train_ds) <= ENSEMBLE_SAMPLE:
        return None
    return torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(seed))[:ENSEMBLE_SAMPLE].sort().values


def refit_data(train_ds, seed: int = 0):
    """``(x, examples)``: the training data a model's ``after_fit`` sees — all of them in memory (on the CPU), a
    random sample of :data:`REFIT_SAMPLE` when they are streamed from disk and more (read in batches) — and how
    many that is."""
    if not train_ds.streamed:
        return train_ds.x.cpu(), len(train_ds)
    sub = train_ds.subset(REFIT_SAMPLE, seed)
    return sub.x, len(sub)


def _single_process(tc) -> bool:
    devices = _parse_devices(tc.devices)
    return devices in (1, "auto", [0]) and tc.num_nodes == 1 and tc.strategy in ("auto", "single_device")


def build_trainer(prep: Prepared, quiet: bool = False) -> L.Trainer:
    """The Lightning trainer of a prepared run (atomic checkpoints, CSV logs in the run directory if it has one)."""
    from lightning.pytorch.loggers import CSVLogger

    _quiet_lightning()
    tc = prep.cfg.train
    strategy = tc.strategy
    model = prep.model
    if strategy == "ddp" and (str(tc.accelerator) == "cpu" or model.has_critic):
        from lightning.pytorch.strategies import DDPStrategy

        # WAE-GAN backpropagates twice per step (critic, then encoder/decoder); the critic pass leaves the
        # encoder/decoder without gradients, which DDP accepts only with unused-parameter detection.
        kw = {"process_group_backend": "gloo"} if str(tc.accelerator) == "cpu" else {}
        strategy = DDPStrategy(checkpoint_io=AtomicCheckpointIO(), find_unused_parameters=model.has_critic, **kw)
    n = len(prep.data.train)
    return L.Trainer(
        max_epochs=tc.epochs,
        max_steps=tc.max_steps - prep.steps_done if tc.max_steps > 0 else tc.max_steps,
        max_time={"seconds": max(1e-3, tc.max_minutes * 60 - prep.seconds_used)} if tc.max_minutes else None,
        accelerator=tc.accelerator,
        devices=_parse_devices(tc.devices),
        strategy=strategy,
        num_nodes=tc.num_nodes,
        precision=tc.precision,
        sync_batchnorm=tc.sync_batchnorm,
        deterministic=tc.deterministic,
        logger=CSVLogger(save_dir=str(prep.run_dir), name="logs") if prep.run_dir is not None else False,
        callbacks=prep.callbacks,
        plugins=[AtomicCheckpointIO()] if isinstance(strategy, str) else None,  # a DDPStrategy carries its own
        enable_checkpointing=False,
        enable_progress_bar=tc.progress and not quiet,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(tc.log_every, n // tc.batch_size)),
        num_sanity_val_steps=0,
        default_root_dir=str(prep.run_dir) if prep.run_dir is not None else None,
    )


def fit(prep: Prepared, trainer: L.Trainer, quiet: bool = False) -> float:
    """Run the engine; engine and system failures become one-line :class:`WAEError` s (stops keep their checkpoint).
    Returns the wall time of training in seconds."""
    from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

    last, ckpt_cb = prep.last, prep.ckpt
    if _rank() == 0:
        for note in prep.notes or []:  # what a resume changed: said even when quiet
            print(note)
        if prep.resume and prep.resume_from is None and not quiet:
            print(f"--resume: no checkpoint in {last.parent}, starting from scratch")
    t0 = time.time()
    # SIGTERM stops at a step boundary and saves (a run directory); in memory the default handler stays
    with on_sigterm(ckpt_cb.request_stop) if ckpt_cb is not None else contextlib.nullcontext():
        try:
            trainer.fit(prep.lit, prep.loader, ckpt_path=prep.resume_from)
        except TrainingStopped:
            raise
        except TrainingError as e:  # a non-finite loss or gradient: say what is left to resume from
            if ckpt_cb is None:
                raise
            raise TrainingError(f"{e}; {_kept_good(ckpt_cb, last)}") from None
        except WAEError:
            raise
        except MisconfigurationException as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if prep.saved_config is not None and _rank() == 0:
                atomic_write_text(prep.run_dir / "config.yaml", prep.saved_config)
            raise ConfigError(f"the training engine refused this run: {msg}") from None
        except SIGTERMException:
            raise TrainingStopped(f"stopped by SIGTERM after step {trainer.global_step}; {_kept(ckpt_cb, last)}; "
                                  "`--resume` continues") from None
        except (KeyboardInterrupt, SystemExit) as e:
            # Lightning turns Ctrl+C into sys.exit(1) after its on_exception hooks
            if isinstance(e, SystemExit) and not trainer.interrupted:
                raise
            raise TrainingStopped(f"interrupted at step {trainer.global_step}; {_kept(ckpt_cb, last)}; "
                                  "`--resume` continues", exit_code=130) from None
        except torch.OutOfMemoryError:
            where = _kept_good(ckpt_cb, last) if ckpt_cb is not None else "nothing was kept"
            raise TrainingError("out of memory on the training device: lower train.batch_size or model.width; "
                                + where) from None
    if trainer.interrupted:
        raise TrainingError(f"training interrupted; resume with --resume (checkpoint: {last})")
    return time.time() - t0


def finalise(prep: Prepared, trainer: L.Trainer, wall: float, quiet: bool = False) -> dict:
    """Export the model, evaluate it on its held-out splits, write metrics, figures and the report (rank 0); unless
    ``quiet``, a line as each phase of the evaluation starts."""
    from ..evaluation.runner import evaluate_run

    last, ckpt_cb, tc = prep.last, prep.ckpt, prep.cfg.train
    after = (f"training finished at step {trainer.global_step} ({_kept(ckpt_cb, last)}); `--resume` runs the "
             "final evaluation")
    if ckpt_cb is not None and ckpt_cb.stop_requested:  # SIGTERM after the last step's check
        raise TrainingStopped(f"stopped by SIGTERM; {after}")
    model = prep.lit.model.cpu().eval()

    def _stop(signum, frame):  # the evaluation has no step boundary to wait for; its writes are atomic
        raise TrainingStopped(f"stopped by SIGTERM during the final evaluation; {after}")

    count = step_count(prep, trainer)
    progress = None if quiet else (lambda line: print(line, flush=True))
    with on_sigterm(_stop):
        refit_x, refit_n = refit_data(prep.data.train, tc.seed)
        model.after_fit(refit_x)
        save_model(model, prep.run_dir, prep.cfg)
        return evaluate_run(model, prep.run_dir, prep.data, prep.cfg, extra={
            "train/after_fit_examples": refit_n if refit_n < len(prep.data.train) else None,
            "train/wall_seconds": wall + prep.seconds_used, "train/steps": count.total,
            "train/steps_kept_run": count.kept, "train/pretrain_steps": count.pretrain,
            "train/clock_stopped": count.clock_stopped,
            "train_note": count.note(tc), "train/epochs": trainer.current_epoch,
            "train/restart_losses": prep.restart_losses,
            "train/pretrain_final": prep.lit.pretrain_history[-1] if prep.lit.pretrain_history else None,
        }, figures=tc.figures, sample_metrics=list(tc.sample_metrics), progress=progress)


def train(cfg: RunConfig, out: str | Path, resume: bool = False, quiet: bool = False, callbacks=None,
          init_state: dict | None = None, return_model: bool = False, overwrite: bool = True):
    """Train ``cfg`` into run directory ``out``; returns the held-out metrics (and the model if ``return_model``).

    A previous run in ``out`` is replaced (its outputs removed first) unless ``overwrite=False``, which refuses as
    ``wae train`` does without ``--overwrite``; ``resume`` continues it instead (see :func:`check_run_dir`).

    ``callbacks`` are extra Lightning callbacks; ``init_state`` a state dict loaded into the model before training
    (e.g. GM-VAE initialised from a trained GM-WAE). The steps: :func:`prepare` → :func:`build_trainer` →
    :func:`fit` → :func:`finalise` (rank 0).
    """
    prep = prepare(cfg, out, resume=resume, callbacks=callbacks, init_state=init_state, overwrite=overwrite,
                   quiet=quiet)
    try:
        trainer = build_trainer(prep, quiet)
        wall = fit(prep, trainer, quiet)
        if not trainer.is_global_zero:
            return ({}, prep.lit.model) if return_model else {}
        metrics = finalise(prep, trainer, wall, quiet)
    finally:
        prep.close()
    return (metrics, prep.lit.model) if return_model else metrics


def fit_in_memory(cfg: RunConfig, data: RunData, callbacks=None, quiet: bool = True,
                  refit: bool = True) -> tuple[AutoEncoderModel, StepCount]:
    """Train ``cfg`` on ``data`` without a run directory (no config, checkpoints, logs or figures written): the
    trained model (CPU, eval mode) and its :class:`StepCount`. For library callers such as the estimator. ``quiet``:
    nothing printed (no progress bar, no progress lines for restart candidates, no note)."""
    prep = prepare(cfg, None, data=data, callbacks=callbacks, quiet=quiet)
    trainer = build_trainer(prep, quiet)
    fit(prep, trainer, quiet)
    model = prep.lit.model.cpu().eval()
    if refit:
        model.after_fit(refit_data(data.train, cfg.train.seed)[0])
    return model, step_count(prep, trainer)


class StepCount(NamedTuple):
    """The optimiser steps of a fit."""

    total: int
    """Every optimiser step of the objective: all restart candidates' (the discarded ones' too) and the kept run's."""
    kept: int
    """The kept run's: its start's steps and those after it (what ``train.max_steps`` bounds)."""
    pretrain: int
    """Pre-training steps (``train.pretrain_steps``, every candidate's), on their own optimiser."""
    clock_stopped: bool
    """Whether ``train.max_minutes`` ended training before ``max_steps`` and ``epochs``: a rerun with the same seed
    may then stop at another step, so the fit is not reproducible."""

    def note(self, tc) -> str | None:
        """One line on a clock-stopped fit (None otherwise)."""
        if not self.clock_stopped:
            return None
        return (f"stopped by the {tc.max_minutes:g}-minute clock (train.max_minutes) at step {self.kept} of "
                f"{tc.max_steps}: not reproducible, a rerun with the same seed may stop at another step")


def step_count(prep: Prepared, trainer: L.Trainer) -> StepCount:
    """The :class:`StepCount` of a prepared run whose trainer has finished."""
    tc = prep.cfg.train
    kept = int(trainer.global_step) + prep.steps_done
    by_steps = tc.max_steps > 0 and kept >= tc.max_steps
    by_epochs = tc.epochs >= 0 and trainer.current_epoch >= tc.epochs
    return StepCount(kept + prep.other_steps, kept, len(prep.lit.pretrain_history) + prep.pretrain_done,
                     bool(tc.max_minutes) and not by_steps and not by_epochs)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


class StartProgress(L.Callback):
    """Progress lines for one restart candidate: ``label`` (e.g. "start 2 of 3"), its steps out of ``steps`` and the
    time elapsed since ``t0`` (the first candidate's start): one line when it starts (before its pre-training),
    then one at the first step ending ``every`` seconds or more after the last line, and one when it ends."""

    def __init__(self, label: str, steps: int, t0: float | None = None, every: float = 20.0, clock=time.monotonic,
                 out=print):
        self.label, self.steps, self.every, self.clock, self.out = label, int(steps), float(every), clock, out
        self.t0 = clock() if t0 is None else t0
        self.last = None

    def _say(self, text: str) -> None:
        now = self.clock()
        self.last = now
        self.out(f"{self.label}: {text} ({_clock(now - self.t0)} elapsed)", flush=True)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._say(f"training {self.steps} steps")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.clock() - self.last >= self.every:
            self._say(f"step {trainer.global_step}/{self.steps}")

    def on_fit_end(self, trainer, pl_module) -> None:
        self._say(f"done, {trainer.global_step} steps")


def _kept_good(ckpt_cb, last: Path) -> str:
    """Which good checkpoint a run stopped by a numerical fault leaves, in words."""
    if ckpt_cb.saved_step is not None:
        return f"the last good checkpoint (step {ckpt_cb.saved_step}) is kept in {last}; --resume continues from it"
    if last.exists():
        return f"the checkpoint in {last} (from before this run) is kept"
    return "no checkpoint had been written yet, so there is nothing to resume"


def _kept(ckpt_cb, last: Path) -> str:
    """Which checkpoint a stopped run leaves, in words."""
    if ckpt_cb.saved_step is not None:
        return f"checkpoint of step {ckpt_cb.saved_step} saved in {last}"
    return (f"the checkpoint in {last.parent} is from before this run" if last.exists()
            else "no checkpoint was written yet")
