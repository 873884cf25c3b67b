"""Restarts (``train.restarts``, beyond the papers): candidate starts trained in memory for a share of the budget,
one kept by a label-free criterion (``train.restarts.select``) and continued by the run; with ``ensemble``, the
starts' consensus partition as the targets of the model's pseudo-label term."""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import lightning as L
import numpy as np
import torch

from ..config import RunConfig
from ..data.source import apply_batched
from ..data.splits import RunData
from ..errors import ConfigError, TrainingError, TrainingStopped
from ..models import AutoEncoderModel, create_model
from .engine import make_trainer, rank, train_loader
from .module import LitAutoEncoder
from .teacher import Teaching

__all__ = ["ENSEMBLE_SAMPLE", "RESTART_CRITERIA", "KeptStart", "RestartCriterion", "StartProgress", "Starts",
           "all_assignments", "ensemble_sample", "keep_start", "mean_confidence", "restart_seed", "select_start",
           "starts_report",
           "train_candidate"]


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


def _cluster_outputs(model, x, fn, batch_size: int):
    """``fn(model, batch)`` over ``x`` (a tensor or a streamed source) in evaluation mode, on the model's device,
    concatenated on the CPU; None for a model without clusters."""
    if not model.has_discrete_latent:
        return None
    was_training = model.training
    model.eval()
    try:
        return apply_batched(lambda b: fn(model, b), x, batch_size, next(model.parameters()).device)
    finally:
        model.train(was_training)


def fixed_cluster_probs(model, x: torch.Tensor, batch_size: int = 500, n: int = 2000, seed: int = 0):
    """q(k|x) (evaluation mode, on the CPU) of the same ``n`` examples of ``x`` (a seeded permutation) whatever the
    model, or None for a model without clusters."""
    if not model.has_discrete_latent:
        return None
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return _cluster_outputs(model, x[idx], lambda m, b: m.cluster_probs(b).float(), batch_size)


def mean_confidence(model, x: torch.Tensor, batch_size: int = 500, n: int = 2000, seed: int = 0) -> float | None:
    """The mean over the same ``n`` examples of ``x`` of max_k q(k|x) (evaluation mode), or None for a model without
    clusters. Label-free: how decisively the model assigns the data to its clusters."""
    p = fixed_cluster_probs(model, x, batch_size, n, seed)
    return None if p is None else float(p.max(dim=1).values.mean())


def _needs_clusters(value, cfg: RunConfig):
    """``value`` (a criterion of a restart candidate), refused when it is None: a model without clusters."""
    if value is None:
        raise ConfigError(f"train.restarts.select={cfg.train.restarts.select} needs a model with clusters; "
                          f"{cfg.model} has none (use tail)")
    return value


def _tail(model, tracker, x, cfg) -> float:
    tail = tracker.losses[-max(1, len(tracker.losses) // 4):]
    return sum(tail) / len(tail)


def all_assignments(model, x: torch.Tensor, batch_size: int = 500):
    """argmax_k q(k|x) of every example of ``x``, in order (evaluation mode; NumPy), or None for a model without
    clusters."""
    out = _cluster_outputs(model, x, lambda m, b: m.cluster_probs(b).argmax(1), batch_size)
    return None if out is None else out.numpy()


def _ensemble_combine(assigned: list, cfg: RunConfig, k: int):
    """Every candidate's minus NMI with the consensus partition of all of them (``k`` clusters: the model's
    components), and that partition."""
    from ..evaluation.clustering import consensus_partition, nmi

    consensus = consensus_partition(assigned, k, seed=cfg.train.seed)
    return [-nmi(a, consensus) for a in assigned], consensus


@dataclass(frozen=True)
class RestartCriterion:
    """One ``train.restarts.select`` rule: ``value(model, tracker, x, cfg)`` of each trained candidate (``tracker``
    its per-step losses, ``x`` the training data); ``combine(values, cfg, k)`` maps all candidates' values, once every
    candidate is in (``k``: the model's mixture components), to their losses and a partition of the training data for ``model.pseudo_label_weight`` (or
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
"""``train.restarts.select`` → its rule (the names ``config.RESTART_SELECT`` accepts)."""


class Starts(NamedTuple):
    """What :func:`select_start` returns."""

    state: dict
    """The kept candidate's state dict."""
    losses: list[float]
    """Every candidate's value under ``restarts.select`` (the lowest is kept)."""
    targets: np.ndarray | None
    """The consensus partition in the kept candidate's component ids (``ensemble``), else None."""
    steps: list[int]
    """Every candidate's optimiser steps."""
    pretrain_steps: list[int]
    """Every candidate's pre-training steps."""
    clock_stopped: bool = False
    """Whether a candidate's share of the clock (``train.candidate_minutes``) stopped it before its steps."""


def select_start(cfg: RunConfig, data: RunData, quiet: bool = True, teaching: Teaching | None = None) -> Starts:
    """Train ``cfg.train.restarts.count`` candidate starts for ``candidate_steps`` steps each (in memory, seeds from
    :func:`restart_seed`) and return the state of the one with the lowest loss under ``restarts.select``
    (:data:`RESTART_CRITERIA`), with every candidate's loss: the mean training objective over its last quarter of
    steps (``tail``), minus :func:`mean_confidence` on the same 2,000 training examples (``confidence``, mixture
    models) or minus the NMI of its assignments of all training data with the candidates' consensus partition
    (``ensemble``). Third: that consensus in the kept candidate's component ids (``ensemble``; the targets of
    ``model.pseudo_label_weight``), else None. Also every candidate's optimiser and pre-training steps
    (:class:`Starts`), and whether the clock cut a candidate short. Label-free: no label is read. Unless ``quiet``,
    a :class:`StartProgress` line says which start runs, its steps and the time elapsed. A ``teaching``
    (:mod:`.teacher`) is given to every candidate.
    """
    from ..evaluation.clustering import align_partition

    tc = cfg.train
    crit = RESTART_CRITERIA[tc.restarts.select]
    best, values, states, steps, pre, cut = None, [], [], [], [], False
    x, sample = data.train.x, ensemble_sample(data.train, tc.seed) if crit.combine is _ensemble_combine else None
    if sample is not None:  # streamed data: the starts' consensus is that of a bounded sample
        x = x.take(sample)
    t0 = time.monotonic()
    if not quiet and rank() == 0:
        clock = f" (or {_clock(tc.candidate_minutes * 60)} of the clock)" if tc.candidate_minutes else ""
        print(f"{tc.restarts.count} candidate starts of {tc.candidate_steps} steps each{clock}; kept: the lowest "
              f"{crit.describe}", flush=True)
    for i in range(tc.restarts.count):
        tracker = _LossTracker()
        cbs = [tracker] if quiet or rank() != 0 else \
            [tracker, StartProgress(f"start {i + 1} of {tc.restarts.count}", tc.candidate_steps, t0=t0)]
        model, n_steps, n_pre, stopped = train_candidate(cfg, data, restart_seed(tc.seed, i), cbs, teaching)
        cut = cut or stopped
        steps.append(n_steps)
        pre.append(n_pre)
        values.append(crit.value(model, tracker, x, cfg))
        if crit.combine is not None:  # scored once every candidate is in: keep them all
            states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        elif values[-1] == min(values):
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    losses, partition = (values, None) if crit.combine is None else crit.combine(values, cfg, model.num_components)
    kept = losses.index(min(losses))
    if states:
        best = states[kept]
    targets = None if partition is None else align_partition(partition, values[kept])
    if targets is not None and sample is not None:  # the examples outside the sample get no target (−1)
        full = np.full(len(data.train), -1, dtype=np.int64)
        full[sample.numpy()] = targets
        targets = full
    return Starts(best, losses, targets, steps, pre, cut)


ENSEMBLE_SAMPLE = 20_000
"""Examples of streamed training data whose assignments the ``ensemble`` restart criterion compares (the starts'
consensus partition; the others get no ``pseudo_label_weight`` target)."""

def ensemble_sample(train_ds, seed: int) -> torch.Tensor | None:
    """The (sorted) examples of streamed training data the ``ensemble`` criterion uses when there are more than
    :data:`ENSEMBLE_SAMPLE`; None otherwise (all of them)."""
    if not train_ds.streamed or len(train_ds) <= ENSEMBLE_SAMPLE:
        return None
    return torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(seed))[:ENSEMBLE_SAMPLE].sort().values


def train_candidate(cfg: RunConfig, data: RunData, seed: int, callbacks: list,
                    teaching: Teaching | None = None) -> tuple[AutoEncoderModel, int, int, bool]:
    """One candidate start: ``cfg``'s model trained from ``seed`` for ``candidate_steps`` steps or its share of the
    clock (``candidate_minutes``), whichever ends first, in memory, without the curves (as a run of that seed to that
    many steps would train it). Returns the model (CPU, eval mode), its optimiser steps, its pre-training steps and
    whether the clock stopped it before its steps. A ``teaching`` sets the prior's weights and the pseudo-label
    targets."""
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    tc = replace(cfg.train, seed=seed, max_steps=cfg.train.candidate_steps, max_minutes=cfg.train.candidate_minutes,
                 restarts=replace(cfg.train.restarts, count=1), eval_every_epochs=0)
    L.seed_everything(seed, workers=True, verbose=False)
    model = create_model(cfg.model, data.train.shape, copy.deepcopy(cfg.model_config))
    lit = LitAutoEncoder(model, tc, data.train.x)
    if teaching is not None:
        teaching.apply(lit)
    loader = train_loader(data.train, tc)
    trainer = make_trainer(tc, model.has_critic, len(data.train), callbacks, quiet=True)
    try:
        trainer.fit(lit, loader)
    except MisconfigurationException as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"the training engine refused this run: {msg}") from None
    except (KeyboardInterrupt, SystemExit) as e:  # Lightning turns Ctrl+C into sys.exit(1)
        if isinstance(e, SystemExit) and not trainer.interrupted:
            raise
        raise TrainingStopped("interrupted while training the restart candidates; nothing was kept",
                              exit_code=130) from None
    except torch.OutOfMemoryError:
        raise TrainingError("out of memory on the training device: lower train.batch_size or model.width; "
                            "nothing was kept") from None
    if trainer.interrupted:
        raise TrainingError("training interrupted while training the restart candidates; nothing was kept")
    stopped = bool(tc.max_minutes) and trainer.global_step < tc.max_steps and trainer.current_epoch < tc.epochs
    return lit.model.cpu().eval(), trainer.global_step, len(lit.pretrain_history), stopped


class KeptStart(NamedTuple):
    """What the run continues from the kept start; a checkpoint carries it as its ``wae_offset``."""

    steps: int
    """The kept start's optimiser steps (counted in ``train.max_steps``)."""
    seconds: float
    """The time the starts took (counted in ``train.max_minutes``)."""
    losses: list[float] | None
    """Every candidate's value under ``restarts.select``."""
    targets: list[int] | None
    """The starts' consensus, a cluster per training example (−1: none), for the pseudo-label term; or None."""
    other_steps: int
    """The discarded candidates' optimiser steps (in ``train/steps``, not in ``max_steps``)."""
    pretrain_steps: int
    """Every candidate's pre-training steps."""
    clock_stopped: bool = False
    """Whether a candidate's share of the clock stopped it before its steps (the run is then not reproducible)."""

    def offset(self) -> dict:
        return {**self._asdict(), "targets": None if self.targets is None else [int(v) for v in self.targets]}


def keep_start(cfg: RunConfig, data: RunData, model: AutoEncoderModel, quiet: bool = False,
               teaching: Teaching | None = None) -> KeptStart:
    """Train the candidate starts (:func:`select_start`), load the kept one's weights into ``model`` and say which
    it is (unless ``quiet``)."""
    tc, t0 = cfg.train, time.time()
    starts = select_start(cfg, data, quiet=quiet, teaching=teaching)
    model.load_state_dict(starts.state)
    kept = starts.losses.index(min(starts.losses))
    seconds = time.time() - t0
    crit = RESTART_CRITERIA[tc.restarts.select]
    if not quiet and rank() == 0:
        sampled = crit.combine is _ensemble_combine and ensemble_sample(data.train, tc.seed) is not None
        took = (f"{tc.candidate_steps} steps each" if not starts.clock_stopped else
                f"{', '.join(map(str, starts.steps))} steps (the clock's share cut them short of {tc.candidate_steps})")
        print(f"kept start {kept} of {tc.restarts.count} after {took} ({crit.describe}"
              + (f", on a random sample of {ENSEMBLE_SAMPLE:,} of the {len(data.train):,} examples streamed from "
                 "disk" if sampled else "") + ", lowest kept: "
              f"{', '.join(f'{v:.4f}' for v in starts.losses)}); {_clock(seconds)} for the starts", flush=True)
    return KeptStart(starts.steps[kept], seconds, starts.losses, starts.targets,
                     sum(starts.steps) - starts.steps[kept], sum(starts.pretrain_steps), starts.clock_stopped)


def starts_report(cfg: RunConfig, values: list[float] | None) -> dict | None:
    """The label-free choice among the restart candidates, for a run's metrics and report: what was tried (``count``
    starts of ``steps`` steps), the criterion (``select``, in words ``why``), every candidate's ``values`` and the
    ``kept`` one (the lowest value). None without restarts."""
    if not values:
        return None
    tc = cfg.train
    kept = values.index(min(values))
    return {"count": len(values), "steps": tc.candidate_steps, "select": tc.restarts.select, "values": list(values),
            "kept": kept, "why": f"start {kept} has the lowest {RESTART_CRITERIA[tc.restarts.select].describe} "
                                 f"({', '.join(f'{v:.4f}' for v in values)})"}


def _clock(seconds: float) -> str:
    s = round(seconds)
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
