"""``wae train``: a whole run — data, model, Lightning fit, export, evaluation, figures, report."""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import lightning as L
import torch

from ..config import RunConfig
from ..data.splits import RunData, load_run_data
from ..errors import ConfigError, TrainingError, TrainingStopped, WAEError
from ..files import atomic_write_text
from ..models import AutoEncoderModel, create_model
from ..serialization import save_model
from .callbacks import EpochEvaluator
from .checkpoint import PeriodicCheckpoint, on_sigterm
from .engine import make_trainer, rank, train_loader
from .module import LitAutoEncoder
from .restarts import ENSEMBLE_SAMPLE, KeptStart, keep_start
from .rundir import RunLock, check_output_dir, check_run_dir, open_run_dir
from .teacher import teach

__all__ = ["ENSEMBLE_SAMPLE", "REFIT_SAMPLE", "Prepared", "StepCount", "build_trainer", "check_output_dir", "finalise",
           "fit", "fit_in_memory", "load_data_for", "prepare", "refit_data", "train"]

log = logging.getLogger("wae")


def load_data_for(cfg: RunConfig, need_test: bool | None = None) -> RunData:
    """The :class:`~wae.data.splits.RunData` (train, val, test) of a run config."""
    return load_run_data(cfg.data, cfg.train.seed, need_test=need_test)


@dataclass
class Prepared:
    """Everything a run needs before the engine starts: its config, data, model, Lightning module and loader."""

    cfg: RunConfig
    data: RunData
    lit: LitAutoEncoder
    loader: torch.utils.data.DataLoader
    callbacks: list
    steps_done: int = 0
    """Steps already taken before this run's trainer starts (the kept restart's), counted in the budget."""
    seconds_used: float = 0.0
    """Wall time already spent before this run's trainer starts (choosing among restarts)."""
    restart_losses: list[float] | None = None
    other_steps: int = 0
    """Optimiser steps of the discarded restart candidates (not in ``max_steps``; in ``train/steps``)."""
    pretrain_done: int = 0
    """Pre-training steps taken before this run's trainer starts (every restart candidate's)."""
    starts_clock_stopped: bool = False
    """Whether the clock cut a restart candidate short of its steps."""
    teacher: str | None = None
    """What ``train.teacher`` gave the run, in words (None without a teacher)."""
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
    lead = rank() == 0 and "LOCAL_RANK" not in os.environ  # the process that owns the run directory
    if run_dir is not None and rank() == 0:
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
    rd = open_run_dir(run_dir, cfg, resume, overwrite, lead) if run_dir is not None else None
    cbs = list(callbacks or [])
    if rd is not None:
        cbs.insert(0, rd.ckpt)
    lit = LitAutoEncoder(model, tc, train_ds.x)
    if tc.teacher and model.has_discrete_latent and not quiet and rank() == 0:  # UMAP takes a minute on large data
        print(f"teacher {tc.teacher}: partitioning the {n:,} training examples …", flush=True)
    teaching, note = teach(tc.teacher, data, model.num_components if model.has_discrete_latent else 0, tc.seed)
    if teaching is not None:
        log.info(note)
        if not quiet and rank() == 0:
            print(note, flush=True)
    start = None
    if rd is not None and rd.offset is not None:  # a resumed run that had chosen among restarts: still counted
        start = KeptStart(**rd.offset)
    elif tc.restarts.count > 1 and (rd is None or rd.resume_from is None) and init_state is None:
        try:
            start = keep_start(cfg, data, model, quiet, teaching)
        except BaseException:
            if rd is not None and rd.lock is not None:
                rd.lock.__exit__(None, None, None)
            raise
        lit.skip_pretrain = True
    if start is not None and model.takes_cluster_targets and start.targets is not None and len(start.targets) == n:
        lit.targets = torch.as_tensor(start.targets, dtype=torch.long)
    if teaching is not None:  # p(k) and the targets, the teacher's before the starts' consensus
        teaching.apply(lit)
    if rd is not None and start is not None and start.steps:
        rd.ckpt.offset = start.offset()
    loader = train_loader(train_ds, tc)
    if tc.eval_every_epochs > 0:
        split, curve_ds = data.curve  # the validation split (never the test split)
        k = min(len(curve_ds), 2000)
        cbs.append(EpochEvaluator(curve_ds.x[:k], curve_ds.y[:k] if curve_ds.y is not None else None,
                                  tc.eval_every_epochs, prefix=f"{split}/"))
    if rd is None:
        return Prepared(cfg, data, lit, loader, cbs, *_counted(start), note)
    return Prepared(cfg, data, lit, loader, cbs, *_counted(start), note, rd.path, rd.ckpt, rd.resume_from,
                    rd.saved_text, resume, rd.lock, rd.notes)


def _counted(start: KeptStart | None) -> tuple:
    """What a kept start adds to the run's counts: steps, seconds, the candidates' values, their other steps, their
    pre-training steps and whether the clock cut one short (:class:`Prepared`'s fields in order)."""
    if start is None:
        return 0, 0.0, None, 0, 0, False
    return start.steps, start.seconds, start.losses, start.other_steps, start.pretrain_steps, start.clock_stopped


REFIT_SAMPLE = 50_000
"""Examples of streamed training data a model's :meth:`~wae.models.base.AutoEncoderModel.after_fit` (e.g. GM-WAE's
component refit) sees: a random sample."""


def refit_data(train_ds, seed: int = 0):
    """``(x, examples)``: the training data a model's ``after_fit`` sees — all of them in memory (on the CPU), a
    random sample of :data:`REFIT_SAMPLE` when they are streamed from disk and more (read in batches) — and how
    many that is."""
    if not train_ds.streamed:
        return train_ds.x.cpu(), len(train_ds)
    sub = train_ds.subset(REFIT_SAMPLE, seed)
    return sub.x, len(sub)


def build_trainer(prep: Prepared, quiet: bool = False) -> L.Trainer:
    """The Lightning trainer of a prepared run (atomic checkpoints, CSV logs in the run directory if it has one)."""
    return make_trainer(prep.cfg.train, prep.model.has_critic, len(prep.data.train), prep.callbacks, prep.run_dir,
                        prep.steps_done, prep.seconds_used, quiet)


def fit(prep: Prepared, trainer: L.Trainer, quiet: bool = False) -> float:
    """Run the engine; engine and system failures become one-line :class:`WAEError` s (stops keep their checkpoint).
    Returns the wall time of training in seconds."""
    from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

    last, ckpt_cb = prep.last, prep.ckpt
    if rank() == 0:
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
            if prep.saved_config is not None and rank() == 0:
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
            "train/restart_losses": prep.restart_losses, "train/teacher": prep.teacher,
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
    starts: list[float] | None = None
    """Every restart candidate's value under ``train.restarts.select`` (the lowest was kept); None without restarts."""
    starts_cut: bool = False
    """Whether the clock cut a restart candidate short of its steps (then ``clock_stopped`` too)."""
    teacher: str | None = None
    """What ``train.teacher`` gave the fit, in words (None without a teacher)."""

    def note(self, tc) -> str | None:
        """One line on a clock-stopped fit (None otherwise)."""
        if not self.clock_stopped:
            return None
        where = (f"at step {self.kept} of {tc.max_steps}" if self.kept < tc.max_steps or not self.starts_cut else
                 "in its candidate starts (each has a share of the clock)")
        return (f"stopped by the {tc.max_minutes:g}-minute clock (train.max_minutes) {where}: not reproducible, a "
                "rerun with the same seed may stop at another step")


def step_count(prep: Prepared, trainer: L.Trainer) -> StepCount:
    """The :class:`StepCount` of a prepared run whose trainer has finished."""
    tc = prep.cfg.train
    kept = int(trainer.global_step) + prep.steps_done
    by_steps = tc.max_steps > 0 and kept >= tc.max_steps
    by_epochs = tc.epochs >= 0 and trainer.current_epoch >= tc.epochs
    return StepCount(kept + prep.other_steps, kept, len(prep.lit.pretrain_history) + prep.pretrain_done,
                     bool(tc.max_minutes) and not by_steps and not by_epochs or prep.starts_clock_stopped,
                     prep.restart_losses, prep.starts_clock_stopped, prep.teacher)


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
