"""The run directory: its lock, the checks of what it holds against a new run (a finished run is not replaced
unless asked; a resume may change only what does not change what is trained), the clearing of a replaced run, and
the run's first writes."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import NamedTuple

from ..config import RunConfig
from ..typed import short as _short
from ..errors import ConfigError, WAEError
from ..files import atomic_write_text
from ..presets import load_run_config
from .checkpoint import PeriodicCheckpoint, load_checkpoint_safely
from .engine import rank

__all__ = ["SAFE_ON_RESUME", "RunDir", "RunLock", "check_output_dir", "check_run_dir", "open_run_dir",
           "prepare_run_dir"]


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
    "train.epochs", "train.max_steps", "train.max_minutes", "train.checkpoint_every_minutes", "train.log_every",
    "train.figures", "train.sample_metrics", "train.eval_every_epochs", "train.on_nan", "train.hardware",
    "data.data_dir", "data.eval_dataset", "data.eval_data_dir", "data.eval_limit", "data.evaluate_test"})
"""Config keys a ``--resume`` may change: budgets, where and how the run is executed, logging and the final
evaluation. Any other change (the model, the data, the optimiser, the seed, ...) would train something else and is
refused."""

_RUN_OUTPUTS = ("model.safetensors", "model.yaml", "metrics.json", "report.md", "report.html", "config.yaml")


def _flat(cfg: RunConfig) -> dict:
    """``section.key`` → value; a nested group (``train.hardware``) is one entry."""
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


class RunDir(NamedTuple):
    """A run directory opened by :func:`open_run_dir`."""

    path: Path
    lock: RunLock | None
    """Held from the first write until the run ends (the lead process's; None on the others)."""
    notes: list[str]
    """Lines for the user (the config changes a resume applies)."""
    saved_text: str | None
    """The resumed run's config text, put back if the engine refuses the checkpoint."""
    resume_from: str | None
    """The checkpoint a resume continues, if there is one."""
    offset: dict | None
    """What the resumed run did before its trainer started (its kept restart's steps, time, targets)."""
    ckpt: PeriodicCheckpoint


def open_run_dir(run_dir: str | Path, cfg: RunConfig, resume: bool, overwrite: bool, lead: bool) -> RunDir:
    """Create ``run_dir``, lock it (``lead``: the process that owns it), check what it holds again under the lock
    (:func:`check_run_dir`), clear a replaced run and write the config: the run's first writes, made only once its
    config, data and model have been checked. A failure releases the lock."""
    run_dir = prepare_run_dir(run_dir, resume)
    lock = RunLock(run_dir).__enter__() if lead else None
    notes, saved_text, resume_from, offset = [], None, None, None
    try:
        last = run_dir / "checkpoints" / "last.ckpt"
        if rank() == 0:
            notes = check_run_dir(run_dir, cfg, resume, overwrite)  # again, under the lock
        if resume and (run_dir / "config.yaml").exists():
            saved_text = (run_dir / "config.yaml").read_text()
        if resume and last.exists():
            offset = _check_resume_budget(last, cfg.train)
            resume_from = str(last)
        if rank() == 0:
            if not resume:
                _clear_previous_run(run_dir)
            atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    except BaseException:
        if lock is not None:
            lock.__exit__(None, None, None)
        raise
    return RunDir(run_dir, lock, notes, saved_text, resume_from, offset,
                  PeriodicCheckpoint(run_dir / "checkpoints", cfg.train.checkpoint_every_minutes))
