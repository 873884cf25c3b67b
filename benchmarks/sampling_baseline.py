"""GM-WAE's own per-cluster samples against the fair baseline: a plain WAE whose codes get a Gaussian mixture fitted
after training (ex-post density estimation, as the RAE paper; ``wae sample --sampler gmm``).

    python benchmarks/sampling_baseline.py --gm RUNS_GM... --wae RUNS_WAE... [--tag T]

For each run, on the test split of its data (the official MNIST test set for mnist-5k), with the data set's domain
classifier (``wae.evaluation.classifier``):
- clustering of the held-out digits: GM-WAE by q(k|x); WAE + GMM by the mixture's p(k | code) — Hungarian
  accuracy and NMI, beside UMAP → GMM on the test digits' pixels (``wae.evaluation.baselines``; no samples);
- per-cluster samples: for each component k, 200 samples drawn from it (GM-WAE: prior mode k; WAE + GMM: mixture
  component k) classified by the domain classifier — purity (share of k's samples in k's majority class, mean over
  k) and the number of distinct majority classes (classes drawn);
- the samples as a whole (2,000 drawn from the whole model): domain FID, precision and recall against 2,000 test
  digits.
Mean ± sample std (ddof 1) over the runs of each model; writes benchmarks/results/sampling-baseline-TAG.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import wae
from wae.data import load_dataset
from wae.evaluation.baselines import umap_gmm_scores
from wae.evaluation.classifier import get_domain_classifier
from wae.evaluation.clustering import hungarian_accuracy, nmi
from wae.evaluation.distances import fid_from_features, precision_recall
from wae.presets import load_run_config
from wae.samplers import GaussianMixtureSampler, draw, encode_all
from wae.training.run import load_data_for


def score(run: Path, sampler: str, components: int, n: int = 2000, per: int = 200, seed: int = 0) -> dict:
    cfg = load_run_config(run / "config.yaml")
    model = wae.load(run)
    data = load_data_for(cfg, need_test=True)  # the test split, also for runs tuned without it
    test = data.test
    clf, _ = get_domain_classifier(cfg.data.dataset, load_dataset(cfg.data.dataset, cfg.data.split))
    state = {}
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if sampler == "gmm":
            state["gmm"] = gmm = GaussianMixtureSampler.fit(encode_all(model, data.train.x), components, seed=seed)
            probs = torch.cat([gmm.predict_proba(encode_all(model, test.x[i:i + 1000]))
                               for i in range(0, len(test), 1000)])
            K = components
        else:
            probs = torch.cat([model.cluster_probs(test.x[i:i + 1000]) for i in range(0, len(test), 1000)])
            K = model.num_components
        assign = probs.argmax(1).numpy()
        y = test.y.numpy()
        out = {"acc_hungarian": hungarian_accuracy(assign, y)[0], "nmi": nmi(assign, y)}
        purity, majority = [], []
        for k in range(K):
            x = draw(sampler, model, per, component=k, generator=g, **state)
            pred = torch.as_tensor(clf.predict_proba(x)).argmax(1)
            counts = torch.bincount(pred, minlength=10)
            purity.append(float(counts.max()) / per)
            majority.append(int(counts.argmax()))
        out["purity"] = float(np.mean(purity))
        out["classes_drawn"] = len(set(majority))
        samples = torch.cat([draw(sampler, model, 500, generator=g, **state) for _ in range(n // 500)])
        real = test.x[torch.randperm(len(test), generator=g)[:n]]
        fs, fr = clf.features(samples), clf.features(real)
        out["fid_domain"] = fid_from_features(fs, fr)
        out["precision"], out["recall"] = precision_recall(fr, fs, k=3)
    return {k: float(v) for k, v in out.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gm", nargs="+", required=True, help="GM-WAE run directories (one per seed)")
    p.add_argument("--wae", nargs="+", required=True, help="WAE run directories (one per seed)")
    p.add_argument("--components", type=int, default=10)
    p.add_argument("--tag", default="default")
    a = p.parse_args()
    cols = ["acc_hungarian", "nmi", "purity", "classes_drawn", "fid_domain", "precision", "recall"]
    rows = []
    for name, runs, sampler in (("GM-WAE, its own components", a.gm, "prior"),
                                ("WAE + GMM fitted afterwards", a.wae, "gmm")):
        scores = [score(Path(r), sampler, a.components) for r in runs]
        for r, s in zip(runs, scores):
            print(name, r, s, flush=True)
        stats = []
        for c in cols:
            v = np.array([s[c] for s in scores])
            stats.append(f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}")
        rows.append(f"| {name} ({len(runs)} runs) | " + " | ".join(stats) + " |")
    test = load_data_for(load_run_config(Path(a.gm[0]) / "config.yaml"), need_test=True).test
    um = umap_gmm_scores(test.x, test.y, a.components)
    if "umap_gmm_acc_hungarian" in um:
        rows.append(f"| UMAP → GMM on the test digits' pixels ({um['umap_gmm_seconds']:.0f} s) | "
                    f"{um['umap_gmm_acc_hungarian']:.3f} | {um['umap_gmm_nmi']:.3f} | " + " | ".join(
                        "–" for _ in cols[2:]) + " |")
    else:
        rows.append(f"| {um['umap_gmm_note']} | " + " | ".join("–" for _ in cols) + " |")
    text = "\n".join([f"`python benchmarks/sampling_baseline.py --gm {' '.join(a.gm)} --wae {' '.join(a.wae)}`", "",
                      "On the test split (clustering) and against 2,000 test digits (FID, precision, recall); purity "
                      "and classes drawn from 200 samples per component.", "",
                      "| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|", *rows])
    print(text)
    out = Path(__file__).parent / "results" / f"sampling-baseline-{a.tag}.md"
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
