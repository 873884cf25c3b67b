"""``wae train``: a whole run — data, model, Lightning fit, export, evaluation, figures, report."""
from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import torch

from ..config import RunConfig
from ..errors import ConfigError, TrainingError, TrainingStopped, WAEError
from ..files import atomic_write_text
from ..serialization import save_model

__all__ = ["train", "prepare_run_dir", "load_data_for"]

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


def load_data_for(cfg: RunConfig, need_test: bool | None = None):
    """The :class:`~wae.data.splits.RunData` (train, val, test) of a run config."""
    from ..data.splits import load_run_data

    return load_run_data(cfg.data, cfg.train.seed, need_test=need_test)


def _check_resume_budget(last: Path, tc) -> None:
    """Refuse (before anything is written) a resume whose epoch or step budget is below what the checkpoint has done."""
    from .checkpoint import load_checkpoint_safely

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


def train(cfg: RunConfig, out: str | Path, resume: bool = False, quiet: bool = False, callbacks=None,
          init_state: dict | None = None, return_model: bool = False):
    """Train ``cfg`` into run directory ``out``; returns the test metrics (and the model if ``return_model``).

    ``callbacks`` are extra Lightning callbacks; ``init_state`` a state dict loaded into the model before training
    (e.g. GM-VAE initialised from a trained GM-WAE).
    """
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                 "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)

    from ..models.registry import create_model
    from .checkpoint import AtomicCheckpointIO, PeriodicCheckpoint, on_sigterm
    from .module import LitAutoEncoder

    cfg.validate()
    run_dir = prepare_run_dir(out, resume)
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")) or 0)
    saved_text = None  # the resumed run's config, put back if the engine refuses the checkpoint
    if resume and (run_dir / "config.yaml").exists():
        saved_text = (run_dir / "config.yaml").read_text()
        saved = RunConfig.from_yaml(saved_text)
        if saved.to_dict()["model"] != cfg.to_dict()["model"]:
            raise WAEError(f"--resume: {run_dir}/config.yaml describes a different model; use another --out")
    if resume and last.exists():
        _check_resume_budget(last, cfg.train)
    if rank == 0:
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())

    data = load_data_for(cfg)
    train_ds = data.train
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    model = create_model(cfg.model, train_ds.shape, cfg.model_config)
    if init_state is not None:
        model.load_state_dict(init_state)
    tc = cfg.train
    lit = LitAutoEncoder(model, tc, train_ds.x)
    n = len(train_ds)
    if n < tc.batch_size:
        raise ConfigError(f"train.batch_size {tc.batch_size} exceeds the {n} training examples")
    if tc.augment_shift and (len(train_ds.shape) != 3 or tc.augment_shift >= min(train_ds.shape[1:])):
        raise ConfigError(f"train.augment_shift translates images; {cfg.data.dataset} has examples of shape "
                          f"{tuple(train_ds.shape)}" + ("" if len(train_ds.shape) != 3 else " (shift too large)"))
    devices = _parse_devices(tc.devices)
    single = devices in (1, "auto", [0]) and tc.num_nodes == 1 and tc.strategy in ("auto", "single_device")
    if single:
        # The shuffle depends only on (seed, epoch): a run resumed mid-epoch draws exactly the remaining batches.
        from .checkpoint import EpochSeededSampler

        loader = torch.utils.data.DataLoader(torch.arange(n), batch_size=tc.batch_size,
                                             sampler=EpochSeededSampler(n, tc.seed), drop_last=True)
    else:  # Lightning shards with a DistributedSampler (seeded by train.seed)
        g = torch.Generator().manual_seed(tc.seed)
        loader = torch.utils.data.DataLoader(torch.arange(n), batch_size=tc.batch_size, shuffle=True,
                                             drop_last=True, generator=g)
    ckpt_cb = PeriodicCheckpoint(ckpt_dir, tc.checkpoint_every_minutes)
    callbacks = [ckpt_cb, *(callbacks or [])]
    if tc.eval_every_epochs > 0:
        from .callbacks import EpochEvaluator

        split, curve_ds = data.curve  # the validation split (never the test split)
        k = min(len(curve_ds), 2000)
        callbacks.append(EpochEvaluator(curve_ds.x[:k], curve_ds.y[:k] if curve_ds.y is not None else None,
                                        tc.eval_every_epochs, prefix=f"{split}/"))
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LightningModule.*has parameters that were not used.*")
    warnings.filterwarnings("ignore", ".*Checkpoint directory.*exists and is not empty.*")
    strategy = tc.strategy
    if strategy == "ddp" and (str(tc.accelerator) == "cpu" or model.has_critic):
        from lightning.pytorch.strategies import DDPStrategy

        # WAE-GAN backpropagates twice per step (critic, then encoder/decoder); the critic pass leaves the
        # encoder/decoder without gradients, which DDP accepts only with unused-parameter detection.
        kw = {"process_group_backend": "gloo"} if str(tc.accelerator) == "cpu" else {}
        strategy = DDPStrategy(checkpoint_io=AtomicCheckpointIO(), find_unused_parameters=model.has_critic, **kw)
    trainer = L.Trainer(
        max_epochs=tc.epochs,
        max_steps=tc.max_steps,
        max_time={"minutes": tc.max_minutes} if tc.max_minutes else None,
        accelerator=tc.accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=tc.num_nodes,
        precision=tc.precision,
        sync_batchnorm=tc.sync_batchnorm,
        deterministic=tc.deterministic,
        logger=CSVLogger(save_dir=str(run_dir), name="logs"),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()] if not hasattr(strategy, "checkpoint_io") else None,
        enable_checkpointing=False,
        enable_progress_bar=tc.progress and not quiet,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(tc.log_every, n // tc.batch_size)),
        num_sanity_val_steps=0,
        default_root_dir=str(run_dir),
    )
    t0 = time.time()
    ckpt_path = str(last) if resume and last.exists() else None
    if resume and ckpt_path is None and not quiet and rank == 0:
        print(f"--resume: no checkpoint in {ckpt_dir}, starting from scratch")
    with on_sigterm(ckpt_cb.request_stop):
        try:
            trainer.fit(lit, loader, ckpt_path=ckpt_path)
        except TrainingError:
            raise
        except WAEError:
            raise
        except MisconfigurationException as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if saved_text is not None and rank == 0:
                atomic_write_text(run_dir / "config.yaml", saved_text)
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
            raise TrainingError("out of memory on the training device: lower train.batch_size or model.width; "
                                f"the last checkpoint in {ckpt_dir} is intact (--resume continues)") from None
    if trainer.interrupted:
        raise TrainingError(f"training interrupted; resume with --resume (checkpoint: {last})")
    wall = time.time() - t0
    if not trainer.is_global_zero:
        return ({}, lit.model) if return_model else {}
    after = (f"training finished at step {trainer.global_step} ({_kept(ckpt_cb, last)}); `--resume` runs the "
             "final evaluation")
    if ckpt_cb.stop_requested:  # SIGTERM after the last step's check
        raise TrainingStopped(f"stopped by SIGTERM; {after}")
    model = lit.model.cpu().eval()
    from ..evaluation.runner import evaluate_run

    def _stop(signum, frame):  # the evaluation has no step boundary to wait for; its writes are atomic
        raise TrainingStopped(f"stopped by SIGTERM during the final evaluation; {after}")

    with on_sigterm(_stop):
        save_model(model, run_dir, cfg)
        metrics = evaluate_run(model, run_dir, data, cfg, extra={
            "train/wall_seconds": wall, "train/steps": trainer.global_step, "train/epochs": trainer.current_epoch,
            "train/pretrain_final": lit.pretrain_history[-1] if lit.pretrain_history else None,
        }, figures=tc.figures, sample_metrics=list(tc.sample_metrics))
    return (metrics, model) if return_model else metrics


def _kept(ckpt_cb, last: Path) -> str:
    """Which checkpoint a stopped run leaves, in words."""
    if ckpt_cb.saved_step is not None:
        return f"checkpoint of step {ckpt_cb.saved_step} saved in {last}"
    return (f"the checkpoint in {last.parent} is from before this run" if last.exists()
            else "no checkpoint was written yet")
