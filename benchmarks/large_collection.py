"""A large collection streamed from disk (issue 36): training and encoding throughput (images/s) and peak memory
for one configuration of devices; ``gpu.sh`` runs it for 1, 2 and 4 GPUs when present.

The data: ``--n`` 28×28 uint8 digits in a ``.npy`` file (mnist-5k's digits drawn at random, each chunk of 50,000
shifted by up to ±2 px, noise of ±12 levels; written once, in chunks, if the file is missing) — 784 MB for a million, streamed (``npy:``) whatever its size.
Training: the main job's model (preset ``main``, one start, no pre-training) for ``--steps`` optimiser steps with
``--batch-size`` per process (under DDP: one process per device, each reading its own shard of every epoch);
images/s = steps after the first ``--warmup`` × batch × processes / their wall time. Encoding (rank 0, one device):
codes and q(k|x) of the first ``--encode-n`` examples, read in batches of 4,096 and decoded on the device.
Peak memory: the device's ``max_memory_allocated`` (the largest over the processes), and each process's peak
resident set (``ru_maxrss``). On shared CPUs wall-clock rates depend on the other jobs: each rate also comes per
CPU-second of the (first) process. The file is streamed when the loader says so (above 1 GiB with its float32
copy, or with ``WAE_IN_MEMORY_BYTES=0``), else held in memory: the "data" column says which. One Markdown row is
appended to ``--table``.

  python benchmarks/large_collection.py --devices 2 --accelerator gpu --table runs/gpu/large.md
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

HEADER = ("| devices | accelerator | data | examples | batch per process | steps | train images/s (per CPU-s) | "
          "peak device memory (train) | encode images/s (per CPU-s) | peak device memory (encode) | peak RSS per "
          "process |\n|---|---|---|---|---|---|---|---|---|---|---|\n")


def make_data(path: Path, n: int, seed: int = 0) -> None:
    from wae.data import load_dataset

    base = (load_dataset("mnist-5k").x[:, 0].numpy() * 255).round().astype(np.uint8)
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp.npy")
    x = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 28, 28))
    for i in range(0, n, 50_000):  # chunks of 50,000 digits, each chunk shifted by one (dy, dx)
        m = min(50_000, n - i)
        src = base[rng.integers(0, len(base), m)]
        dy, dx = (int(v) for v in rng.integers(-2, 3, 2))
        img = np.roll(src, (dy, dx), axis=(1, 2)).astype(np.int16)
        x[i:i + m] = np.clip(img + rng.integers(-12, 13, img.shape, dtype=np.int16), 0, 255).astype(np.uint8)
    x.flush()
    del x
    os.replace(tmp, path)


class Meter(L.Callback):
    """Wall time of the training steps after ``warmup`` (synchronised on the device), and the device's peak memory."""

    def __init__(self, warmup: int, out: Path):
        self.warmup, self.out, self.t0, self.steps = warmup, out, None, 0

    def _sync(self, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.t0 is None:
            self._sync(pl_module)
            self.t0, self.c0 = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.t0 is not None:
            self.steps += 1

    def on_train_end(self, trainer, pl_module):
        self._sync(pl_module)
        wall = time.perf_counter() - self.t0 if self.t0 is not None else float("nan")
        cpu = time.process_time() - self.c0 if self.t0 is not None else float("nan")
        dev = pl_module.device
        peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"meter.rank{trainer.global_rank}.json").write_text(json.dumps(
            {"steps": self.steps, "wall": wall, "cpu": cpu, "peak_device": peak, "world": trainer.world_size,
             "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def encode_throughput(model, data: str, n: int, device: torch.device) -> tuple[float, float, int | None]:
    from wae.data import load_dataset
    from wae.data.source import batches

    ds = load_dataset(data).head(n)
    model = model.to(device).eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for xb in batches(ds.x, 4096, device=device):
            model.encode(xb)
            model.cluster_probs(xb)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return len(ds) / wall, len(ds) / cpu, (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)


def _mib(v) -> str:
    return "–" if v is None else f"{v / 2 ** 20:,.0f} MiB"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--file", default="runs/large/large.npy")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--accelerator", default="gpu")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--encode-n", type=int, default=200_000)
    p.add_argument("--width", type=float, default=None, help="model.width (default: the main preset's)")
    p.add_argument("--out", default="runs/large")
    p.add_argument("--table", default=None, help="Markdown file to append the row to")
    p.add_argument("--json", default=None, help="JSON file to write the row's numbers to")
    a = p.parse_args(argv)
    from wae.presets import resolve_config
    from wae.training import train

    path, out = Path(a.file), Path(a.out) / f"devices{a.devices}"
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    if rank == 0 and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        make_data(path, a.n)
        print(f"large_collection: wrote {path} ({a.n:,} × 28 × 28 uint8) in {time.time() - t0:.0f} s", flush=True)
    sets = ["train.restarts.count=1", "pretrain_steps=0", f"max_steps={a.steps}", "max_minutes=null", "epochs=1000",
            f"batch_size={a.batch_size}", "figures=false", "train.sample_metrics=[]", "checkpoint_every_minutes=0",
            f"val_fraction={1000 / a.n}", "eval_every_epochs=0", f"hardware.accelerator={a.accelerator}",
            f"hardware.devices={a.devices}", f"hardware.strategy={'ddp' if a.devices > 1 else 'auto'}"] + ([f"model.width={a.width}"] if a.width else [])
    cfg = resolve_config("gm-wae", "main", f"npy:{path}", None, sets, {})
    meter = Meter(min(a.warmup, a.steps - 1), out)
    t0 = time.time()
    metrics, model = train(cfg, out, quiet=True, callbacks=[meter], return_model=True)
    if rank != 0:
        return 0
    ranks = [json.loads(f.read_text()) for f in sorted(out.glob("meter.rank*.json"))]
    world = ranks[0]["world"]
    train_ips = a.batch_size * world * ranks[0]["steps"] / ranks[0]["wall"]
    train_cpu = a.batch_size * ranks[0]["steps"] / ranks[0]["cpu"]
    dev = torch.device("cuda" if a.accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu")
    enc_ips, enc_cpu, enc_peak = encode_throughput(model, f"npy:{path}", a.encode_n, dev)
    peaks = [r["peak_device"] for r in ranks if r["peak_device"] is not None]
    from wae.data import load_dataset

    kind = "streamed" if load_dataset(f"npy:{path}").streamed else "in memory"
    row = (f"| {world} | {a.accelerator} | {kind} | {a.n:,} | {a.batch_size} | {ranks[0]['steps']} (after "
           f"{meter.warmup}) | {train_ips:,.0f} ({train_cpu:,.0f}) | {_mib(max(peaks) if peaks else None)} | "
           f"{enc_ips:,.0f} ({enc_cpu:,.0f}) | {_mib(enc_peak)} | {_mib(max(r['rss'] for r in ranks))} |")
    print(f"large_collection: devices={world} train {train_ips:,.0f} images/s, encode {enc_ips:,.0f} images/s "
          f"(total {time.time() - t0:.0f} s, train/steps={metrics.get('train/steps')})", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({
            "devices": world, "streamed": kind == "streamed", "examples": a.n, "steps": ranks[0]["steps"],
            "train_ips": train_ips, "train_ips_cpu": train_cpu, "enc_ips": enc_ips, "enc_ips_cpu": enc_cpu,
            "peak_rss_mib": max(r["rss"] for r in ranks) / 2 ** 20,
            **({"peak_device_mib": max(peaks) / 2 ** 20} if peaks else {})}))
    if a.table:
        t = Path(a.table)
        t.parent.mkdir(parents=True, exist_ok=True)
        with open(t, "a") as f:
            if t.stat().st_size == 0:
                f.write(HEADER)
            f.write(row + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
