"""``wae train``: a whole run — data, model, Lightning fit, export, evaluation, figures, report."""
from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch

from ..config import RunConfig
from ..data.splits import RunData, load_run_data
from ..errors import ConfigError, TrainingError, TrainingStopped, WAEError
from ..files import atomic_write_text
from ..models import AutoEncoderModel, create_model
from ..serialization import save_model
from .callbacks import EpochEvaluator
from .checkpoint import AtomicCheckpointIO, EpochSeededSampler, PeriodicCheckpoint, load_checkpoint_safely, on_sigterm
from .module import LitAutoEncoder

__all__ = ["train", "prepare", "build_trainer", "fit", "finalise", "fit_in_memory", "Prepared", "prepare_run_dir",
           "load_data_for"]

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
    """An exclusive lock file in the run directory: a second concurrent run in the same directory is refused."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self.fd = None

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid = None
            try:
                pid = int(self.path.read_text().strip() or 0)
            except (OSError, ValueError):
                pass
            if pid and _pid_alive(pid):
                raise WAEError(f"{self.path.parent} is in use by another run (pid {pid}); pick another --out") from None
            # stale lock from a killed process: take it over
            self.path.unlink(missing_ok=True)
            self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_run_dir(out: str | Path, resume: bool) -> Path:
    run_dir = Path(out)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise WAEError(f"cannot write to output directory {run_dir}: {e.strerror or e}") from None
    if not resume and (run_dir / "model.safetensors").exists() and os.environ.get("WAE_OVERWRITE") != "1":
        pass  # re-training into a finished run overwrites it file by file (atomically); resume continues it
    return run_dir


def load_data_for(cfg: RunConfig, need_test: bool | None = None) -> RunData:
    """The :class:`~wae.data.splits.RunData` (train, val, test) of a run config."""
    return load_run_data(cfg.data, cfg.train.seed, need_test=need_test)


def _check_resume_budget(last: Path, tc) -> None:
    """Refuse (before anything is written) a resume whose epoch or step budget is below what the checkpoint has done."""
    c = load_checkpoint_safely(last, map_location="cpu")
    try:
        epochs_done = int(c["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
        steps_done = int(c["global_step"])
    except (KeyError, TypeError, ValueError):
        return  # not a checkpoint of ours: the engine will say what is wrong with it
    if tc.epochs >= 0 and tc.epochs < epochs_done:
        raise ConfigError(f"--resume: the checkpoint {last} has trained {epochs_done} epochs, more than "
                          f"train.epochs={tc.epochs}; pass --epochs {epochs_done} or more to continue it")
    if tc.max_steps > 0 and tc.max_steps < steps_done:
        raise ConfigError(f"--resume: the checkpoint {last} has trained {steps_done} steps, more than "
                          f"train.max_steps={tc.max_steps}; raise --max-steps to continue it")


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
            callbacks=None, init_state: dict | None = None) -> Prepared:
    """Validate the config, load the data (unless given), build the model, its Lightning module and the loader.

    With ``run_dir`` the run is a run directory (config written, checkpoints, logs; ``resume`` continues its last
    checkpoint); without, training happens in memory only (the estimator). Nothing is written before the config and
    the data have been checked.
    """
    cfg.validate()
    if data is None:
        data = load_data_for(cfg)
    train_ds = data.train
    tc = cfg.train
    n = len(train_ds)
    if n < tc.batch_size:
        raise ConfigError(f"train.batch_size {tc.batch_size} exceeds the {n} training examples")
    if tc.augment_shift and (len(train_ds.shape) != 3 or tc.augment_shift >= min(train_ds.shape[1:])):
        raise ConfigError(f"train.augment_shift translates images; {cfg.data.dataset} has examples of shape "
                          f"{tuple(train_ds.shape)}" + ("" if len(train_ds.shape) != 3 else " (shift too large)"))
    L.seed_everything(tc.seed, workers=True, verbose=False)
    model = create_model(cfg.model, train_ds.shape, cfg.model_config)
    if init_state is not None:
        model.load_state_dict(init_state)
    # only now, with the config, data and model checked, is anything written into the run directory
    saved_text = resume_from = None
    ckpt = None
    cbs = list(callbacks or [])
    if run_dir is not None:
        run_dir = prepare_run_dir(run_dir, resume)
        last = run_dir / "checkpoints" / "last.ckpt"
        if resume and (run_dir / "config.yaml").exists():
            saved_text = (run_dir / "config.yaml").read_text()
            saved = RunConfig.from_yaml(saved_text)
            if saved.to_dict()["model"] != cfg.to_dict()["model"]:
                raise WAEError(f"--resume: {run_dir}/config.yaml describes a different model; use another --out")
        if resume and last.exists():
            _check_resume_budget(last, cfg.train)
            resume_from = str(last)
        if _rank() == 0:
            atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        ckpt = PeriodicCheckpoint(run_dir / "checkpoints", cfg.train.checkpoint_every_minutes)
        cbs.insert(0, ckpt)
    lit = LitAutoEncoder(model, tc, train_ds.x)
    if _single_process(tc):
        # The shuffle depends only on (seed, epoch): a run resumed mid-epoch draws exactly the remaining batches.
        loader = torch.utils.data.DataLoader(torch.arange(n), batch_size=tc.batch_size,
                                             sampler=EpochSeededSampler(n, tc.seed), drop_last=True)
    else:  # Lightning shards with a DistributedSampler (seeded by train.seed)
        g = torch.Generator().manual_seed(tc.seed)
        loader = torch.utils.data.DataLoader(torch.arange(n), batch_size=tc.batch_size, shuffle=True,
                                             drop_last=True, generator=g)
    if tc.eval_every_epochs > 0:
        split, curve_ds = data.curve  # the validation split (never the test split)
        k = min(len(curve_ds), 2000)
        cbs.append(EpochEvaluator(curve_ds.x[:k], curve_ds.y[:k] if curve_ds.y is not None else None,
                                  tc.eval_every_epochs, prefix=f"{split}/"))
    return Prepared(cfg, data, lit, loader, cbs, Path(run_dir) if run_dir is not None else None, ckpt, resume_from,
                    saved_text, resume)


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
        max_steps=tc.max_steps,
        max_time={"minutes": tc.max_minutes} if tc.max_minutes else None,
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
    if prep.resume and prep.resume_from is None and not quiet and _rank() == 0:
        print(f"--resume: no checkpoint in {last.parent}, starting from scratch")
    t0 = time.time()
    # SIGTERM stops at a step boundary and saves (a run directory); in memory the default handler stays
    with on_sigterm(ckpt_cb.request_stop) if ckpt_cb is not None else contextlib.nullcontext():
        try:
            trainer.fit(prep.lit, prep.loader, ckpt_path=prep.resume_from)
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
            where = f"the last checkpoint in {last.parent} is intact (--resume continues)" if last else "nothing was kept"
            raise TrainingError("out of memory on the training device: lower train.batch_size or model.width; "
                                + where) from None
    if trainer.interrupted:
        raise TrainingError(f"training interrupted; resume with --resume (checkpoint: {last})")
    return time.time() - t0


def finalise(prep: Prepared, trainer: L.Trainer, wall: float) -> dict:
    """Export the model, evaluate it on its held-out splits, write metrics, figures and the report (rank 0)."""
    from ..evaluation.runner import evaluate_run

    last, ckpt_cb, tc = prep.last, prep.ckpt, prep.cfg.train
    after = (f"training finished at step {trainer.global_step} ({_kept(ckpt_cb, last)}); `--resume` runs the "
             "final evaluation")
    if ckpt_cb is not None and ckpt_cb.stop_requested:  # SIGTERM after the last step's check
        raise TrainingStopped(f"stopped by SIGTERM; {after}")
    model = prep.lit.model.cpu().eval()

    def _stop(signum, frame):  # the evaluation has no step boundary to wait for; its writes are atomic
        raise TrainingStopped(f"stopped by SIGTERM during the final evaluation; {after}")

    with on_sigterm(_stop):
        save_model(model, prep.run_dir, prep.cfg)
        return evaluate_run(model, prep.run_dir, prep.data, prep.cfg, extra={
            "train/wall_seconds": wall, "train/steps": trainer.global_step, "train/epochs": trainer.current_epoch,
            "train/pretrain_final": prep.lit.pretrain_history[-1] if prep.lit.pretrain_history else None,
        }, figures=tc.figures, sample_metrics=list(tc.sample_metrics))


def train(cfg: RunConfig, out: str | Path, resume: bool = False, quiet: bool = False, callbacks=None,
          init_state: dict | None = None, return_model: bool = False):
    """Train ``cfg`` into run directory ``out``; returns the held-out metrics (and the model if ``return_model``).

    ``callbacks`` are extra Lightning callbacks; ``init_state`` a state dict loaded into the model before training
    (e.g. GM-VAE initialised from a trained GM-WAE). The steps: :func:`prepare` → :func:`build_trainer` →
    :func:`fit` → :func:`finalise` (rank 0).
    """
    prep = prepare(cfg, out, resume=resume, callbacks=callbacks, init_state=init_state)
    trainer = build_trainer(prep, quiet)
    wall = fit(prep, trainer, quiet)
    if not trainer.is_global_zero:
        return ({}, prep.lit.model) if return_model else {}
    metrics = finalise(prep, trainer, wall)
    return (metrics, prep.lit.model) if return_model else metrics


def fit_in_memory(cfg: RunConfig, data: RunData, callbacks=None, quiet: bool = True) -> tuple[AutoEncoderModel, int]:
    """Train ``cfg`` on ``data`` without a run directory (no config, checkpoints, logs or figures written): the
    trained model (CPU, eval mode) and the number of optimiser steps taken. For library callers such as the
    estimator."""
    prep = prepare(cfg, None, data=data, callbacks=callbacks)
    trainer = build_trainer(prep, quiet)
    fit(prep, trainer, quiet)
    return prep.lit.model.cpu().eval(), int(trainer.global_step)


def _kept(ckpt_cb, last: Path) -> str:
    """Which checkpoint a stopped run leaves, in words."""
    if ckpt_cb.saved_step is not None:
        return f"checkpoint of step {ckpt_cb.saved_step} saved in {last}"
    return (f"the checkpoint in {last.parent} is from before this run" if last.exists()
            else "no checkpoint was written yet")
