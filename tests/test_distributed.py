"""Data parallelism: N processes with gathered batch-level divergences == one process on the concatenated batch.

Two gloo processes on the CPU each take half of a global batch, wrap the model in ``DistributedDataParallel``
and set ``model.gather = all_gather_with_grad`` and ``model.rank`` exactly as ``LitAutoEncoder.on_fit_start``
does. Every random draw a rank makes inside ``loss()`` / ``critic_loss()`` (reparameterisation noise, prior
samples) is recorded; the single-process reference replays the ranks' draws concatenated along the batch axis,
which is exactly the global batch's noise. We then check

* every rank's batch-level term (MMD, the GAN penalty, the critic loss) equals the single-process term on the
  global batch, and the global loss is the mean of the ranks' losses (the reconstruction term is a local mean);
* the DDP gradients (all-gather backward sums the ranks' contributions, DDP averages over ranks) equal the
  single-process gradients, and are identical on both ranks.

Models run in ``eval()`` mode: in train mode batch norm normalises with per-process statistics (SyncBatchNorm
would be needed, and it is GPU-only), so a data-parallel run is not the same computation as one process there.
Everything runs in float64 so that the tolerances are tight.

Data streamed from disk (issue 36): in the ``-disk`` cases each rank reads its batch of a uint8 ``.npy`` file through
the training loader's rows (:class:`wae.data.source.SourceRows`) and the DistributedSampler DDP puts in, reading
only its own rows; the shards are disjoint and the reference is one process on their concatenation. A second test
runs the real engine (Lightning DDP, two gloo processes) on a streamed file and checks that each process reads its
own disjoint part of every epoch, and nothing more.
"""
from __future__ import annotations

import contextlib
import os
import socket

import pytest
import torch
from conftest import gloo_on_loopback
from torch import nn

WORLD = 2
DATA_SHAPE = (1, 28, 28)

# (case id, model name, per-rank batch, model overrides, what to evaluate)
CASES = [
    ("wae-mmd", "wae-mmd", 8, {}, "loss"),
    ("wae-mmd-stochastic", "wae-mmd", 8, {"stochastic_encoder": True}, "loss"),
    ("gm-wae", "gm-wae", 6, {}, "loss"),
    ("gm-wae-entropy", "gm-wae", 5, {"entropy_weight": 0.5}, "loss"),
    ("wae-gan", "wae-gan", 8, {}, "loss"),
    ("wae-gan-critic", "wae-gan", 8, {}, "critic"),
    ("gmvae-usage", "gmvae", 4, {"usage_weight": 1.0}, "loss"),
]
TERMS = {"wae-mmd": ("recon", "mmd"), "gm-wae": ("recon", "mmd", "qD_entropy"), "wae-gan": ("recon", "gan_penalty")}
GLOBAL_TERMS = {"mmd", "gan_penalty", "qD_entropy", "critic", "usage_kl"}
DISK_CASES = [  # the per-rank batch read from an on-disk source by each rank's distributed sampler
    ("wae-mmd-disk", "wae-mmd", 8, {}, "loss"),
    ("gm-wae-disk", "gm-wae", 6, {}, "loss"),
]
DISK_N = 48  # examples in the on-disk file: an epoch of two shards of 24
ALL_CASES = CASES + DISK_CASES


# --- record / replay every Gaussian draw made inside a model call -----------------------------------------
@contextlib.contextmanager
def record_noise(log: list):
    randn, randn_like = torch.randn, torch.randn_like

    def rec_randn(*a, **kw):
        t = randn(*a, **kw)
        log.append(t.detach().clone())
        return t

    def rec_randn_like(*a, **kw):
        t = randn_like(*a, **kw)
        log.append(t.detach().clone())
        return t

    torch.randn, torch.randn_like = rec_randn, rec_randn_like
    try:
        yield log
    finally:
        torch.randn, torch.randn_like = randn, randn_like


@contextlib.contextmanager
def replay_noise(draws: list):
    """Serve ``draws`` in order to torch.randn / torch.randn_like (shapes must match)."""
    randn, randn_like = torch.randn, torch.randn_like
    queue = list(draws)

    def _next(shape, dtype, device):
        assert queue, "the reference made more random draws than the ranks"
        t = queue.pop(0)
        assert tuple(t.shape) == tuple(shape), f"replayed draw has shape {tuple(t.shape)}, wanted {tuple(shape)}"
        return t.to(dtype=dtype or torch.get_default_dtype(), device=device)

    def rep_randn(*size, generator=None, dtype=None, device=None, **kw):
        shape = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        return _next(shape, dtype, device)

    def rep_randn_like(t, dtype=None, **kw):
        return _next(t.shape, dtype or t.dtype, t.device)

    torch.randn, torch.randn_like = rep_randn, rep_randn_like
    try:
        yield
    finally:
        torch.randn, torch.randn_like = randn, randn_like
    assert not queue, f"{len(queue)} recorded draws were not used by the reference"


# --- shared setup ----------------------------------------------------------------------------------------
def build(name: str, overrides: dict):
    from wae.models import create_model

    torch.manual_seed(0)
    model = create_model(name, DATA_SHAPE, width=0.0625, **overrides).double()
    # eval(): batch norm uses its running statistics, identical on every process (see the module docstring)
    return model.eval()


def global_batch(batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.rand(WORLD * batch, *DATA_SHAPE, generator=g, dtype=torch.float64)


class _Step(nn.Module):
    """What Lightning's DDP wrapper does: the model's objective is computed inside DDP's forward."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, what: str):
        if what == "critic":
            codes = self.model.codes(x)
            return {"critic": self.model.critic_loss(codes)}
        return self.model.loss(x)


def _grads(model) -> dict:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _run_case(model, x, what, seed):
    """One step of the objective on x with recorded noise; returns (terms, grads, draws)."""
    step = _Step(model)
    draws: list = []
    torch.manual_seed(seed)
    with record_noise(draws):
        terms = step(x, what)
    key = "critic" if what == "critic" else "loss"
    terms[key].backward()
    return {k: v.detach().clone() for k, v in terms.items()}, _grads(model), draws


def disk_batch(outdir: str, rank: int, batch: int) -> dict:
    """Rank ``rank``'s first batch of the on-disk file through the training loader's rows and a DistributedSampler
    (as Lightning sets it up under DDP), the indices of its whole epoch, and the bytes it read."""
    from torch.utils.data import DataLoader, DistributedSampler

    from wae.data import load_dataset
    from wae.data.source import as_batch

    ds = load_dataset(f"npy:{os.path.join(outdir, 'disk.npy')}")
    assert ds.streamed
    rows = ds.x.rows()
    loader = DataLoader(rows, batch_size=batch, sampler=DistributedSampler(rows, WORLD, rank, shuffle=True, seed=0),
                        drop_last=True, collate_fn=as_batch)
    batches = list(loader)
    idx, raw = batches[0]
    assert raw.dtype == torch.uint8  # rows travel as bytes, become floats where the model runs
    return {"x": ds.x.decode(raw).double(), "idx": idx, "epoch": torch.cat([b[0] for b in batches]),
            "bytes": ds.x.bytes_read}


def _worker(rank: int, port: int, outdir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from wae.training.module import all_gather_with_grad

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        for case, name, batch, overrides, what in ALL_CASES:
            model = build(name, overrides)
            model.gather, model.rank = all_gather_with_grad, rank
            step = DDP(_Step(model), find_unused_parameters=(what == "critic"))
            disk = disk_batch(outdir, rank, batch) if case.endswith("-disk") else {}
            x = disk["x"] if disk else global_batch(batch)[rank * batch:(rank + 1) * batch]
            draws: list = []
            torch.manual_seed(1000 + rank)  # a different stream on every rank, as in on_fit_start
            with record_noise(draws):
                terms = step(x, what)
            terms["critic" if what == "critic" else "loss"].backward()  # DDP averages the gradients here
            torch.save({"terms": {k: v.detach() for k, v in terms.items()}, "grads": _grads(model), "draws": draws,
                        **disk}, os.path.join(outdir, f"{case}.rank{rank}.pt"))
            dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    import torch.multiprocessing as mp

    import numpy as np

    outdir = tmp_path_factory.mktemp("ddp")
    np.save(outdir / "disk.npy", np.random.default_rng(7).integers(0, 256, (DISK_N, *DATA_SHAPE), dtype=np.uint8))
    with pytest.MonkeyPatch.context() as mpatch:
        gloo_on_loopback(mpatch)
        mpatch.setenv("WAE_IN_MEMORY_BYTES", "0")  # the file is streamed whatever its size
        last = None
        for _ in range(3):  # a port taken between _free_port() and bind: try another
            try:
                mp.spawn(_worker, args=(_free_port(), str(outdir)), nprocs=WORLD, join=True)
                break
            except Exception as e:  # noqa: BLE001 - ProcessRaisedException; retried, then re-raised
                last = e
                if "address already in use" not in str(e).lower():
                    raise
        else:
            raise last
    return {case: [torch.load(outdir / f"{case}.rank{r}.pt") for r in range(WORLD)] for case, *_ in ALL_CASES}


def _batch_axis(shape, batch: int) -> int:
    """Where a draw's per-example axis is: 0 (codes and prior samples, (N, …)), else the first axis of the per-rank
    batch's size (GMVAE's reparameterisation noise is (M, N, d))."""
    return 0 if shape[0] == batch or batch not in shape else list(shape).index(batch)


def _reference(name, batch, overrides, what, ranks):
    """One process on the whole batch, replaying the ranks' draws concatenated along the batch axis."""
    model = build(name, overrides)
    n_draws = {len(r["draws"]) for r in ranks}
    assert len(n_draws) == 1
    draws = [torch.cat([r["draws"][i] for r in ranks], _batch_axis(ranks[0]["draws"][i].shape, batch))
             for i in range(n_draws.pop())]
    step = _Step(model)
    x = torch.cat([r["x"] for r in ranks]) if "x" in ranks[0] else global_batch(batch)  # the ranks' batches
    with replay_noise(draws):
        terms = step(x, what)
    terms["critic" if what == "critic" else "loss"].backward()
    return {k: v.detach() for k, v in terms.items()}, _grads(model)


def _close(a, b, atol=1e-10, rtol=1e-7):
    return torch.allclose(a, b, atol=atol, rtol=rtol)


@pytest.mark.slow
@pytest.mark.parametrize("case,name,batch,overrides,what", ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_data_parallel_equals_single_process(ddp_results, case, name, batch, overrides, what):
    ranks = ddp_results[case]
    if case.endswith("-disk"):  # each rank read its own shard, and only the rows it took
        a, b = (set(r["epoch"].tolist()) for r in ranks)
        assert not a & b and a | b == set(range(DISK_N)), (sorted(a), sorted(b))
        assert all(r["bytes"] == len(r["epoch"]) * 28 * 28 for r in ranks)
        assert all(set(r["idx"].tolist()) <= set(r["epoch"].tolist()) for r in ranks)
    ref_terms, ref_grads = _reference(name, batch, overrides, what, ranks)

    # terms: batch-level ones are global (identical on every rank); the loss is the mean of the ranks' losses
    for key, ref in ref_terms.items():
        got = [r["terms"][key] for r in ranks]
        if key in GLOBAL_TERMS:
            for r, v in enumerate(got):
                assert _close(v, ref), f"{case}: rank {r} {key} {float(v)} != single-process {float(ref)}"
        elif key in ("loss", "recon"):
            mean = torch.stack(got).mean()
            assert _close(mean, ref), f"{case}: mean over ranks of {key} {float(mean)} != {float(ref)}"

    # gradients: DDP leaves the same averaged gradient on every rank, equal to the single-process gradient
    assert set(ranks[0]["grads"]) == set(ref_grads), f"{case}: different parameters received gradients"
    scale = max(float(g.abs().max()) for g in ref_grads.values())
    worst = 0.0
    for pname, ref in ref_grads.items():
        g0, g1 = ranks[0]["grads"][pname], ranks[1]["grads"][pname]
        assert torch.equal(g0, g1), f"{case}: DDP gradients of {pname} differ between ranks"
        worst = max(worst, float((g0 - ref).abs().max()))
    assert worst <= 1e-9 * max(1.0, scale), f"{case}: max |grad diff| {worst:.3g} (max |grad| {scale:.3g})"


def test_replay_reproduces_a_single_process_call():
    """The record/replay harness itself: replaying a call's own draws gives the same loss and gradients."""
    model = build("gm-wae", {})
    x = global_batch(3)
    terms, grads, draws = _run_case(model, x, "loss", seed=5)
    ref_terms, ref_grads = _reference("gm-wae", 3, {}, "loss", [{"draws": draws}])
    assert torch.equal(terms["loss"], ref_terms["loss"])
    assert all(torch.equal(grads[k], ref_grads[k]) for k in grads)


PROBE = """
import json, os, sys
import lightning as L
from wae.presets import resolve_config
from wae.training import train


class Record(L.Callback):
    def __init__(self):
        self.idx = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.idx.append(batch[0].tolist())

    def on_train_end(self, trainer, pl_module):
        with open(os.path.join(sys.argv[2], f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump({"idx": self.idx, "bytes": pl_module.source.bytes_read, "world": trainer.world_size}, f)


cfg = resolve_config("gm-wae", None, "npy:" + sys.argv[1], None, [
    "model.width=0.0625", "pretrain_steps=0", "figures=false", "train.sample_metrics=[]", "batch_size=20", "epochs=2",
    "hardware.accelerator=cpu", "hardware.devices=2", "hardware.strategy=ddp", "val_fraction=0.2", "checkpoint_every_minutes=0"], {})
train(cfg, sys.argv[2], quiet=True, callbacks=[Record()])
"""


@pytest.mark.slow
def test_ddp_engine_on_a_streamed_source_reads_disjoint_shards(tmp_path, monkeypatch):
    """`wae train` under Lightning DDP (2 gloo processes) on a 200-example uint8 .npy streamed from disk: in each of
    the 2 epochs the processes train on disjoint halves of the 160 training examples (40 are the validation carve),
    and each process reads from the file exactly the rows of its own batches."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np

    gloo_on_loopback(monkeypatch)
    np.save(tmp_path / "d.npy", np.random.default_rng(0).integers(0, 256, (200, 28, 28), dtype=np.uint8))
    (tmp_path / "probe.py").write_text(PROBE)  # a file: Lightning's launcher re-runs sys.argv for the second rank
    out = tmp_path / "run"
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "WAE_IN_MEMORY_BYTES": "0", "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, str(tmp_path / "probe.py"), str(tmp_path / "d.npy"), str(out)], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((out / f"rank{k}.json").read_text()) for k in range(WORLD)]
    assert all(q["world"] == WORLD for q in ranks)
    per_epoch = 160 // 20 // WORLD  # batches per process and epoch
    for e in range(2):
        a, b = (set(sum(q["idx"][e * per_epoch:(e + 1) * per_epoch], [])) for q in ranks)
        assert len(a) == len(b) == 80 and not a & b, (e, sorted(a & b))
    for q in ranks:
        assert q["bytes"] == sum(len(i) for i in q["idx"]) * 28 * 28  # its own rows, nothing else
    assert json.loads((out / "metrics.json").read_text())["train/steps"] == 2 * per_epoch
