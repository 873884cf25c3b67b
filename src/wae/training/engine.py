"""The Lightning engine's parts every fit shares — the run's, a restart candidate's, a library caller's: the
training batches, the trainer, the process rank."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from ..config import TrainConfig
from ..data.source import as_batch
from ..errors import ConfigError
from ..runtime import local_rank as rank
from ..runtime import quiet_lightning
from .checkpoint import AtomicCheckpointIO, EpochSeededSampler

__all__ = ["make_trainer", "parse_devices", "quiet_lightning", "rank", "single_process", "train_loader"]


def parse_devices(v: str):
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
        raise ConfigError(f"train.hardware.devices must be 'auto', a count or a list like 0,1; got {v!r}") from None


def single_process(tc) -> bool:
    hw = tc.hardware
    devices = parse_devices(hw.devices)
    return devices in (1, "auto", [0]) and hw.num_nodes == 1 and hw.strategy in ("auto", "single_device")


def train_loader(train_ds, tc: TrainConfig) -> torch.utils.data.DataLoader:
    """The training batches of ``train_ds``: indices into the data held on the device (in memory), or, for data
    streamed from disk, ``(indices, raw rows)`` read in the source's DataLoader workers (none for arrays, whose rows
    are read in the main process; min(4, CPUs) for image folders, decoded in the workers; the rows become float32 on
    the device, :meth:`~wae.data.source.Source.decode`).

    One process: the shuffle depends only on (seed, epoch), so a run resumed mid-epoch draws exactly the remaining
    batches; its own generator, so creating each epoch's iterator draws nothing from the global RNG (which the
    checkpoint carries) and a run resumed at an epoch boundary sees the same random stream. Several processes:
    Lightning puts a DistributedSampler (seeded by ``train.seed``) in, and each process reads its own part of
    each epoch."""
    n = len(train_ds)
    kw: dict = {}
    rows = torch.arange(n)
    if train_ds.streamed:
        workers = train_ds.x.workers
        rows = train_ds.x.rows()
        kw = {"collate_fn": as_batch, "num_workers": workers, "persistent_workers": workers > 0,
              "pin_memory": str(tc.hardware.accelerator) in ("gpu", "cuda", "auto") and torch.cuda.is_available()}
    g = torch.Generator().manual_seed(tc.seed)
    if single_process(tc):
        return torch.utils.data.DataLoader(rows, batch_size=tc.batch_size, sampler=EpochSeededSampler(n, tc.seed),
                                           drop_last=True, generator=g, **kw)
    return torch.utils.data.DataLoader(rows, batch_size=tc.batch_size, shuffle=True, drop_last=True, generator=g,
                                       **kw)


def make_trainer(tc: TrainConfig, has_critic: bool, n: int, callbacks: list, run_dir: Path | None = None,
                 steps_done: int = 0, seconds_used: float = 0.0, quiet: bool = False) -> L.Trainer:
    """The Lightning trainer of a fit on ``n`` training examples under ``tc`` (atomic checkpoints; CSV logs in
    ``run_dir`` if given): ``steps_done`` steps and ``seconds_used`` seconds already spent count in the budget."""
    from lightning.pytorch.loggers import CSVLogger

    quiet_lightning()
    hw = tc.hardware
    strategy = hw.strategy
    if strategy == "ddp" and (str(hw.accelerator) == "cpu" or has_critic):
        from lightning.pytorch.strategies import DDPStrategy

        # WAE-GAN backpropagates twice per step (critic, then encoder/decoder); the critic pass leaves the
        # encoder/decoder without gradients, which DDP accepts only with unused-parameter detection.
        kw = {"process_group_backend": "gloo"} if str(hw.accelerator) == "cpu" else {}
        strategy = DDPStrategy(checkpoint_io=AtomicCheckpointIO(), find_unused_parameters=has_critic, **kw)
    return L.Trainer(
        max_epochs=tc.epochs,
        max_steps=tc.max_steps - steps_done if tc.max_steps > 0 else tc.max_steps,
        max_time={"seconds": max(1e-3, tc.max_minutes * 60 - seconds_used)} if tc.max_minutes else None,
        accelerator=hw.accelerator,
        devices=parse_devices(hw.devices),
        strategy=strategy,
        num_nodes=hw.num_nodes,
        precision=hw.precision,
        logger=CSVLogger(save_dir=str(run_dir), name="logs") if run_dir is not None else False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()] if isinstance(strategy, str) else None,  # a DDPStrategy carries its own
        enable_checkpointing=False,
        enable_progress_bar=not quiet,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(tc.log_every, n // tc.batch_size)),
        num_sanity_val_steps=0,
        default_root_dir=str(run_dir) if run_dir is not None else None,
    )
