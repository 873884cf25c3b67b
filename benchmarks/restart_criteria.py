"""Label-free restart criteria against validation accuracy (how `train.restarts.select` was chosen).

    python benchmarks/restart_criteria.py BASE_SEED N     # N candidate starts of the main setting, 900 steps each

Per candidate (seed ``restart_seed(BASE_SEED, i)``, exactly as ``train.restarts`` would train it): the mean
training objective over its last quarter of steps (``tail``), the objective of its final weights on the same 2,000
training digits with the same warps (``loss``) and its terms, the mean max_k q(k|x) on them (``conf``,
``confidence``), and the Hungarian accuracy on the validation split (labels read here only, to judge the criteria).
The test set is not loaded. One JSON line per candidate; the list in runs/diag/crit-BASE.json.

    python benchmarks/restart_criteria.py --picks R crit-7.json crit-8.json ...

reads such lists and prints, per list, the mean validation accuracy of the candidate each criterion keeps out of
every subset of R candidates (what ``train.restarts=R`` would keep on average): a random pick, ``tail``,
``confidence``, ``consensus`` (the candidate whose assignments agree best, by mean NMI, with the others') and the
best candidate (an oracle).

    python benchmarks/restart_criteria.py --ensemble R crit-7.json crit-8.json ...

scores the candidates' consensus partitions (``train.restarts.select=ensemble``'s target,
``consensus_partition``) against single candidates, all on the 2,000 training digits whose assignments the lists
hold (their labels read here only, to judge): per list and R, the mean (and worst) Hungarian accuracy of a single
candidate, of the consensus of R candidates over every subset of R, and of the best of the R (an oracle)."""
from __future__ import annotations

import copy
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

from wae.evaluation.clustering import hungarian_accuracy, nmi
from wae.presets import resolve_config
from wae.training.restarts import _LossTracker, restart_seed
from wae.training.run import fit_in_memory, load_data_for

SETS = ["data.evaluate_test=false", "max_minutes=null", "eval_every_epochs=0", "max_steps=900", "progress=false",
        "restarts.count=1", "component_refit=false"]


def consensus_scores(assignments: list) -> list[float]:
    """Each partition's mean NMI with the others: the ``consensus`` rule (a ``train.restarts.select`` value until it
    lost on validation; see benchmarks/README.md)."""
    n = len(assignments)
    return [float(np.mean([nmi(assignments[a], assignments[b]) for b in range(n) if b != a])) if n > 1 else 1.0
            for a in range(n)]


def picks(path: str, r: int) -> dict[str, float]:
    """Mean validation accuracy of the candidate each criterion keeps, over every subset of ``r`` candidates."""
    cands = json.loads(Path(path).read_text())
    labels = [np.asarray(c["labels"]) for c in cands]

    def consensus(s):  # the candidate whose assignments agree best with the others'
        scores = consensus_scores([labels[i] for i in s])
        return s[scores.index(max(scores))]

    rules = {"random": None, "tail": lambda s: min(s, key=lambda i: cands[i]["tail"]),
             "confidence": lambda s: max(s, key=lambda i: cands[i]["conf"]),
             "consensus": consensus,
             "oracle": lambda s: max(s, key=lambda i: cands[i]["acc"])}
    subsets = list(itertools.combinations(range(len(cands)), r))
    out = {}
    for name, rule in rules.items():
        accs = [np.mean([cands[i]["acc"] for i in s]) if rule is None else cands[rule(s)]["acc"] for s in subsets]
        out[name] = float(np.mean(accs))
    return out


def ensemble(path: str, r: int, y: np.ndarray) -> dict[str, str]:
    """Hungarian accuracy on the 2,000 training digits: single candidates, the consensus of every subset of ``r``,
    the best of each subset."""
    from wae.evaluation.clustering import consensus_partition

    labels = [np.asarray(c["labels"]) for c in json.loads(Path(path).read_text())]
    single = [hungarian_accuracy(a, y)[0] for a in labels]
    subsets = list(itertools.combinations(range(len(labels)), r))
    cons = [hungarian_accuracy(consensus_partition([labels[i] for i in s], 10), y)[0] for s in subsets]
    best = [max(single[i] for i in s) for s in subsets]
    return {name: f"{np.mean(v):.3f} (worst {np.min(v):.3f})"
            for name, v in (("single", single), (f"consensus of {r}", cons), (f"best of {r}", best))}


def _diag_labels() -> np.ndarray:
    """The labels of the 2,000 training digits the candidates were scored on (as ``main`` draws them)."""
    cfg = resolve_config("gm-wae", "main", "mnist-5k", None, SETS)
    data = load_data_for(cfg)
    idx = torch.randperm(len(data.train.x), generator=torch.Generator().manual_seed(123))[:2000]
    return data.train.y[idx].numpy()


def main() -> None:
    if sys.argv[1] == "--ensemble":
        r, y = int(sys.argv[2]), _diag_labels()
        for path in sys.argv[3:]:
            print(f"| {path} | R = {r} | " + " | ".join(f"{k}: {v}" for k, v in ensemble(path, r, y).items()) + " |")
        return
    if sys.argv[1] == "--picks":
        r = int(sys.argv[2])
        print(f"| candidates (best of {r}) | " + " | ".join(picks(sys.argv[3], r)) + " |")
        for path in sys.argv[3:]:
            print(f"| {path} | " + " | ".join(f"{v:.3f}" for v in picks(path, r).values()) + " |")
        return
    base, n = int(sys.argv[1]), int(sys.argv[2])
    cfg = resolve_config("gm-wae", "main", "mnist-5k", None, SETS)
    data = load_data_for(cfg)
    idx = torch.randperm(len(data.train.x), generator=torch.Generator().manual_seed(123))[:2000]  # as _diag_labels
    out = []
    for i in range(n):
        c = copy.deepcopy(cfg)
        c.train.seed = restart_seed(base, i)
        tracker = _LossTracker()
        model, _ = fit_in_memory(c, data, callbacks=[tracker], refit=False)
        tail = tracker.losses[-225:]
        terms = {}
        torch.manual_seed(0)
        with torch.no_grad():
            model.eval()
            assigned = model.cluster_probs(data.val.x).argmax(1).numpy()
            probs = model.cluster_probs(data.train.x[idx])
            conf = float(probs.max(1).values.mean())
            model.train()
            for j in range(0, 2000, 100):  # the objective and its terms on the same batches and warps
                for k, v in model.loss(data.train.x[idx[j:j + 100]]).items():
                    if torch.is_tensor(v) and v.numel() == 1:
                        terms[k] = terms.get(k, 0.0) + float(v) / 20
        acc = hungarian_accuracy(assigned, data.val.y.numpy())[0]
        rec = dict(i=i, tail=sum(tail) / len(tail), acc=acc, conf=conf, **terms)
        out.append({**rec, "labels": probs.argmax(1).tolist()})  # for the consensus criterion (`--picks`)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rec.items()}), flush=True)
    Path("runs/diag").mkdir(parents=True, exist_ok=True)
    Path(f"runs/diag/crit-{base}.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main()
