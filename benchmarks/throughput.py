"""Throughput: one full training step vs the bare networks' forward + backward on the same batch.

    python benchmarks/throughput.py [--batch 100] [--width 0.25] [--repeats 10] [--models wae-mmd,gm-wae,...]
    python benchmarks/throughput.py --mmd-scaling          # MMD cost against batch size, K = 1 and K = 10
    python benchmarks/throughput.py --pythae               # against pythae's WAE_MMD, same nets/batch (if installed)
    python benchmarks/throughput.py --pythae-trainer       # whole training epochs: our Lightning loop vs pythae's
    python benchmarks/throughput.py --loop-overhead        # our Lightning batch vs a plain loop, same model

"bare" = the model's own encoder and decoder networks, forward and backward of a plain squared error (for GM-WAE:
all n·K codes decoded, as its objective needs); "full" = ``model.loss(x)`` (all terms, MMD included) + backward +
Adam step. The ratio full / bare is the overhead of the objective and the optimiser.
"""
from __future__ import annotations

import argparse
import time

import torch

from wae.models import create_model


def bare_step(model, x):
    name = model.registry_name
    if name in ("gm-wae", "gm-wae-elbo"):
        n, K = x.shape[0], model.config.num_components
        logits = model.discrete(x)
        mu, logvar = model.q_continuous(x)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        xr = model.decode(z.reshape(n * K, -1)).view(n, K, *x.shape[1:])
        loss = (xr - x.unsqueeze(1)).pow(2).mean() + logits.mean()
    elif hasattr(model, "encoder") and hasattr(model, "decoder"):
        h = model.encoder(x)
        z = h[:, : model.config.latent_dim]
        loss = (model.decode(z) - x).pow(2).mean()
    else:
        return None
    loss.backward()
    return loss


def full_step(model, x, opt):
    terms = model.loss(x)
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    opt.step()


def timeit(fn, repeats):
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def paired(fa, fb, repeats):
    """Median times of two step functions measured alternately (same warm caches, same machine state)."""
    import statistics

    fa(), fb(), fa(), fb()  # warm-up
    ta, tb = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        fa()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        fb()
        tb.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def step_times(name: str, batch: int, width: float, repeats: int) -> dict:
    """One model's full training step against its bare networks' forward + backward on the same random batch
    (paired medians; models without an encoder/decoder pair: the full step alone)."""
    x = torch.rand(batch, 1, 28, 28)
    m = create_model(name, (1, 28, 28), width=width)
    if bare_step(m, x) is None:
        opt = torch.optim.Adam(m.parameters(), lr=1e-4)
        tf = timeit(lambda: full_step(m, x, opt), repeats)
        return {"full_ms": tf * 1e3, "samples_s": batch / tf}
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    tb, tf = paired(lambda: (m.zero_grad(set_to_none=True), bare_step(m, x)), lambda: full_step(m, x, opt), repeats)
    return {"bare_ms": tb * 1e3, "full_ms": tf * 1e3, "ratio": tf / tb, "samples_s": batch / tf}


def mmd_scaling(sizes=(100, 250, 500, 1000, 2000, 4000), repeats=3):
    """Forward + backward of the MMD penalty alone: K = 1 (n codes) and K = 10 (n·K weighted, grouped codes)."""
    from wae.priors import GaussianMixturePrior, GaussianPrior
    from wae.divergences import IMQKernel, mmd

    print("MMD forward+backward (IMQ, 7 scales), d = 10")
    print(f"{'n':>6s} {'K':>3s} {'points':>7s} {'ms':>9s} {'kernel MB':>10s}")
    for K in (1, 10):
        prior = GaussianPrior(10) if K == 1 else GaussianMixturePrior(10, K)
        kern = IMQKernel(base=prior.expected_sq_dist())
        for n in sizes:
            pts = n * K
            if pts > 10000:
                continue
            z = torch.randn(pts, 10, requires_grad=True)
            if K == 1:
                fn = lambda: mmd(z, prior.rsample((n,)), kern).backward()
            else:
                w = torch.full((pts,), 1.0 / pts)
                g = torch.arange(n).repeat_interleave(K)
                zp, wp, gp = prior.sample_stratified(n)
                fn = lambda: mmd(z, zp, kern, w, wp, g, gp).backward()
            t = timeit(fn, repeats)
            mb = 3 * pts * pts * 4 / 2**20  # the three n×n kernel blocks in float32
            print(f"{n:6d} {K:3d} {pts:7d} {t * 1e3:9.1f} {mb:10.1f}")


def _ours_and_pythae_twin(width: float):
    """Our ``wae-mmd`` and pythae's ``WAE_MMD`` around copies of the same encoder/decoder (None without pythae)."""
    try:
        from pythae.models import WAE_MMD, WAE_MMD_Config
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
    except ImportError:
        print("pythae is not installed: skipping the peer comparison (pip install pythae)")
        return None
    import copy

    torch.manual_seed(0)
    ours = create_model("wae-mmd", (1, 28, 28), width=width, cost_scale=1.0, lam=10.0)

    class Enc(BaseEncoder):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return ModelOutput(embedding=self.net(x))

    class Dec(BaseDecoder):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    d = ours.config.latent_dim
    cfg = WAE_MMD_Config(input_dim=(1, 28, 28), latent_dim=d, kernel_choice="imq", reg_weight=10.0,
                         kernel_bandwidth=2.0 * d, scales=[0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0])
    theirs = WAE_MMD(cfg, encoder=Enc(copy.deepcopy(ours.encoder)), decoder=Dec(copy.deepcopy(ours.decoder)))
    return ours, theirs


def pythae_comparison(batch: int, width: float, repeats: int):
    """Our wae-mmd step vs pythae's WAE_MMD step with the same encoder/decoder, batch and optimiser."""
    pair = _ours_and_pythae_twin(width)
    if pair is None:
        return
    ours, theirs = pair
    x = torch.rand(batch, 1, 28, 28)
    o1 = torch.optim.Adam(ours.parameters(), lr=1e-4)
    o2 = torch.optim.Adam(theirs.parameters(), lr=1e-4)
    ours.train()
    theirs.train()

    def step_theirs():
        out = theirs({"data": x})
        o2.zero_grad(set_to_none=True)
        out.loss.backward()
        o2.step()

    t_ours, t_theirs = paired(lambda: full_step(ours, x, o1), step_theirs, repeats)
    tb, _ = paired(lambda: (ours.zero_grad(set_to_none=True), bare_step(ours, x)), lambda: None, repeats)
    print(f"pythae WAE_MMD vs wae-mmd, batch {batch}, width {width}, same nets:")
    print(f"  bare fwd+bwd {tb * 1e3:.1f} ms | ours {t_ours * 1e3:.1f} ms ({t_ours / tb:.2f}x bare) | "
          f"pythae {t_theirs * 1e3:.1f} ms ({t_theirs / tb:.2f}x bare) | our throughput / theirs = "
          f"{t_theirs / t_ours:.2f}")
    return {"bare_ms": tb * 1e3, "ours_ms": t_ours * 1e3, "theirs_ms": t_theirs * 1e3, "ours_ratio": t_ours / tb,
            "theirs_ratio": t_theirs / tb, "speedup": t_theirs / t_ours}


def pythae_trainer_comparison(batch: int, width: float, epochs: int = 3):
    """Whole training epochs on mnist-5k: our Lightning loop (device-resident data, batched by index) against
    pythae's ``BaseTrainer.train_step`` (its DataLoader, per-step ``.item()``), same nets, batch and optimiser.
    Reports the median epoch time over epochs 2..E of each (epoch 1 is warm-up)."""
    pair = _ours_and_pythae_twin(width)
    if pair is None:
        return
    ours, theirs = pair
    import logging
    import statistics
    import tempfile

    import lightning as L
    from pythae.data.datasets import BaseDataset
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    from wae.config import TrainConfig
    from wae.data import load_dataset
    from wae.training.module import LitAutoEncoder

    logging.getLogger("pythae").setLevel(logging.ERROR)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    x = load_dataset("mnist-5k", split="train").x
    n = x.shape[0]

    class EpochTimer(L.Callback):
        def __init__(self):
            self.times = []

        def on_train_epoch_start(self, trainer, module):
            self.t = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            self.times.append(time.perf_counter() - self.t)

    with tempfile.TemporaryDirectory() as tmp:
        tc = TrainConfig(batch_size=batch, lr=1e-4, pretrain_steps=0, epochs=epochs)
        lit = LitAutoEncoder(ours, tc, x)
        from wae.training.checkpoint import EpochSeededSampler

        loader = torch.utils.data.DataLoader(torch.arange(n), batch_size=batch, sampler=EpochSeededSampler(n, 0),
                                             drop_last=True)
        timer = EpochTimer()
        from lightning.pytorch.loggers import CSVLogger

        trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=CSVLogger(tmp, name="l"),
                            callbacks=[timer], enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, log_every_n_steps=10, num_sanity_val_steps=0,
                            default_root_dir=tmp)
        trainer.fit(lit, loader)
        t_ours = statistics.median(timer.times[1:])

        ptc = BaseTrainerConfig(output_dir=tmp, per_device_train_batch_size=batch, num_epochs=epochs,
                                learning_rate=1e-4, optimizer_cls="Adam", no_cuda=True)
        ptrainer = BaseTrainer(theirs, BaseDataset(x, torch.zeros(n)), training_config=ptc)
        ptrainer.prepare_training()  # what BaseTrainer.train does before its epoch loop
        times = []
        for e in range(1, epochs + 1):
            t = time.perf_counter()
            ptrainer.train_step(e)
            times.append(time.perf_counter() - t)
        t_theirs = statistics.median(times[1:])
    steps = n // batch
    print(f"whole epochs on mnist-5k ({n} images, batch {batch}, width {width}), median of epochs 2..{epochs}:")
    print(f"  ours (Lightning) {t_ours:.2f} s/epoch = {steps * batch / t_ours:.0f} samples/s | pythae BaseTrainer "
          f"{t_theirs:.2f} s/epoch = {n / t_theirs:.0f} samples/s | our throughput / theirs = "
          f"{(steps * batch / t_ours) / (n / t_theirs):.2f}")
    return {"ours_s_epoch": t_ours, "ours_samples_s": steps * batch / t_ours, "theirs_s_epoch": t_theirs,
            "theirs_samples_s": n / t_theirs, "speedup": (steps * batch / t_ours) / (n / t_theirs)}


def loop_overhead(width: float, batch: int, steps: int = 30):
    """Our Lightning training batch (hooks, closure, checks, logging) against a plain loss/backward/step loop of the
    same model on the same mnist-5k batches, in one process: median milliseconds per step of each."""
    import logging
    import statistics
    import tempfile

    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from wae.config import TrainConfig
    from wae.data import load_dataset
    from wae.training.checkpoint import EpochSeededSampler
    from wae.training.module import LitAutoEncoder

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    x = load_dataset("mnist-5k", split="train").x
    torch.manual_seed(0)
    m = create_model("wae-mmd", (1, 28, 28), width=width, cost_scale=1.0, lam=10.0)
    opt = torch.optim.Adam(m.parameters(), 1e-4)
    plain = []
    for i in range(steps):
        xb = x[(i % (len(x) // batch)) * batch:][:batch]
        t = time.perf_counter()
        full_step(m, xb, opt)
        plain.append(time.perf_counter() - t)

    class Timer(L.Callback):
        def __init__(self):
            self.ts = []

        def on_train_batch_start(self, *a):
            self.t = time.perf_counter()

        def on_train_batch_end(self, *a):
            self.ts.append(time.perf_counter() - self.t)

    lit = LitAutoEncoder(m, TrainConfig(batch_size=batch, lr=1e-4, pretrain_steps=0, epochs=1), x)
    loader = torch.utils.data.DataLoader(torch.arange(len(x)), batch_size=batch,
                                         sampler=EpochSeededSampler(len(x), 0), drop_last=True)
    timer = Timer()
    with tempfile.TemporaryDirectory() as tmp:
        L.Trainer(max_epochs=1, max_steps=steps, accelerator="cpu", devices=1, logger=CSVLogger(tmp, name="l"),
                  callbacks=[timer], enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp).fit(lit, loader)
    tp, tl = statistics.median(plain[2:]), statistics.median(timer.ts[2:])
    print(f"wae-mmd width {width}, batch {batch}: plain loop {tp * 1e3:.1f} ms/step | Lightning batch "
          f"{tl * 1e3:.1f} ms/step | ratio {tl / tp:.2f}")
    return {"plain_ms": tp * 1e3, "lightning_ms": tl * 1e3, "ratio": tl / tp}


GM_EXTRAS = dict(consistency={"weight": 3.0}, entropy_weight=1.0, discrete_width=2.0)
"""The main job's GM-WAE settings beyond the paper (consistency on warped digits, batch entropy, a twice-as-wide q_D):
part of every GM-WAE step it takes."""


def _variants(width: float, extras: bool = True):
    """name → a fresh model: WAE-MMD and GM-WAE with the exact and the sparse estimator over k, same width."""
    gm = dict(width=width, **(GM_EXTRAS if extras else {}))
    return {
        "wae-mmd": lambda: create_model("wae-mmd", (1, 28, 28), width=width, latent_dim=10),
        "gm-wae exact": lambda: create_model("gm-wae", (1, 28, 28), **gm),
        "gm-wae sparse": lambda: create_model("gm-wae", (1, 28, 28), k_estimator="sparse", **gm),
    }


def gm_vs_wae(batch: int, width: float, repeats: int):
    """Issue 22's check: a full GM-WAE training step (exact and sparse over k, with the main job's extra terms)
    against a full WAE-MMD step at the same decoder width multiplier and batch, measured alternately in one process
    (median of ``repeats``)."""
    import statistics

    torch.manual_seed(0)
    x = torch.rand(batch, 1, 28, 28)
    steps = {}
    for name, make in _variants(width).items():
        m = make().train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-4)
        steps[name] = (lambda m=m, opt=opt: full_step(m, x, opt))
    for f in steps.values():  # warm-up
        f(), f()
    times = {k: [] for k in steps}
    for _ in range(repeats):
        for k, f in steps.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"full training step, batch {batch}, width {width}, torch threads {torch.get_num_threads()}, "
          f"median of {repeats} (alternating):")
    for k, t in med.items():
        print(f"  {k:14s} {t * 1e3:8.1f} ms  {t / med['wae-mmd']:5.2f}x wae-mmd  {batch / t:8.0f} samples/s")
    out = {f"{k.replace(' ', '_')}_ms": t * 1e3 for k, t in med.items()}
    return {**out, **{f"{k.replace(' ', '_')}_x_wae": t / med["wae-mmd"] for k, t in med.items()},
            "wae-mmd_samples_s": batch / med["wae-mmd"]}


def device_table(device: str, width: float, batches: list[int], precisions: list[str], repeats: int,
                 out: str | None = None):
    """Throughput (samples/s) of a full training step on ``device``: wae-mmd, gm-wae exact and sparse, and pythae's
    WAE_MMD on the same networks (when installed), per batch size and precision (``fp32``, ``bf16`` autocast)."""
    import contextlib

    dev = torch.device(device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    rows = ["| model | batch | precision | ms/step | samples/s |", "|---|---|---|---|---|"]
    for batch in batches:
        x = torch.rand(batch, 1, 28, 28, device=dev)
        makers = dict(_variants(width))
        pair = _ours_and_pythae_twin(width)
        if pair is not None:
            makers["pythae WAE_MMD"] = lambda pair=pair: pair[1]
        for prec in precisions:
            for name, make in makers.items():
                m = make().to(dev).train()
                opt = torch.optim.Adam(m.parameters(), lr=1e-4)
                ctx = (torch.autocast(dev.type, dtype=torch.bfloat16) if prec == "bf16"
                       else contextlib.nullcontext())

                def step():
                    with ctx:
                        loss = m({"data": x}).loss if name.startswith("pythae") else m.loss(x)["loss"]
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                try:
                    step(), step()
                    sync()
                    t = time.perf_counter()
                    for _ in range(repeats):
                        step()
                    sync()
                    dt = (time.perf_counter() - t) / repeats
                    rows.append(f"| {name} | {batch} | {prec} | {dt * 1e3:.2f} | {batch / dt:,.0f} |")
                except (RuntimeError, torch.OutOfMemoryError) as e:
                    rows.append(f"| {name} | {batch} | {prec} | failed: {str(e).splitlines()[0][:60]} | |")
                print(rows[-1], flush=True)
    text = (f"device {device} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}), width {width}, "
            f"{repeats} steps each\n\n" + "\n".join(rows) + "\n")
    if out:
        from pathlib import Path

        Path(out).write_text(text)
    return text


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--models", default="wae-mmd,wae-gan,vae,gm-wae,gm-wae-elbo,gmvae,stacked-wae,wae-deep")
    p.add_argument("--mmd-scaling", action="store_true")
    p.add_argument("--pythae", action="store_true")
    p.add_argument("--pythae-trainer", action="store_true")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--loop-overhead", action="store_true")
    p.add_argument("--gm-vs-wae", action="store_true", help="GM-WAE exact/sparse full step vs WAE-MMD (issue 22)")
    p.add_argument("--device-table", action="store_true", help="samples/s per model, batch and precision")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", default="100,1000")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--table-out")
    a = p.parse_args()
    if a.gm_vs_wae:
        return gm_vs_wae(a.batch, a.width, a.repeats)
    if a.device_table:
        print(device_table(a.device, a.width, [int(b) for b in a.batches.split(",")], a.precisions.split(","),
                           a.repeats, a.table_out))
        return
    if a.mmd_scaling:
        return mmd_scaling()
    if a.loop_overhead:
        return loop_overhead(a.width, a.batch)
    if a.pythae_trainer:
        return pythae_trainer_comparison(a.batch, a.width, a.epochs)
    if a.pythae:
        return pythae_comparison(a.batch, a.width, a.repeats)
    print(f"batch {a.batch}, width {a.width}, torch threads {torch.get_num_threads()}")
    print(f"{'model':10s} {'bare ms':>9s} {'full ms':>9s} {'ratio':>6s} {'samples/s':>10s}")
    for name in a.models.split(","):
        torch.manual_seed(0)
        r = step_times(name, a.batch, a.width, a.repeats)
        nan = float("nan")
        print(f"{name:10s} {r.get('bare_ms', nan):9.1f} {r['full_ms']:9.1f} {r.get('ratio', nan):6.2f} "
              f"{r['samples_s']:10.1f}")


if __name__ == "__main__":
    main()
