"""Throughput: one full training step vs the bare networks' forward + backward on the same batch.

    python benchmarks/throughput.py [--batch 100] [--width 0.25] [--repeats 10] [--models wae-mmd,gm-wae,...]

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
    if name in ("gm-wae", "gm-vae"):
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--models", default="wae-mmd,wae-gan,vae,gm-wae,gm-vae")
    a = p.parse_args()
    torch.manual_seed(0)
    x = torch.rand(a.batch, 1, 28, 28)
    print(f"batch {a.batch}, width {a.width}, torch threads {torch.get_num_threads()}")
    print(f"{'model':10s} {'bare ms':>9s} {'full ms':>9s} {'ratio':>6s} {'samples/s':>10s}")
    for name in a.models.split(","):
        m = create_model(name, (1, 28, 28), width=a.width)
        m.train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-4)
        tb = timeit(lambda: (m.zero_grad(set_to_none=True), bare_step(m, x)), a.repeats)
        tf = timeit(lambda: full_step(m, x, opt), a.repeats)
        print(f"{name:10s} {tb * 1e3:9.1f} {tf * 1e3:9.1f} {tf / tb:6.2f} {a.batch / tf:10.1f}")


if __name__ == "__main__":
    main()
