"""Ensemble restarts: the consensus partition of several starts, and the pseudo-label term that teaches it."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from wae.config import RunConfig
from wae.errors import ConfigError
from wae.evaluation.clustering import align_partition, consensus_partition, nmi


def _onehot_sse(parts, labels, k):
    """The k-means objective of ``labels`` on the concatenated one-hot rows of ``parts`` (brute-force reference)."""
    x = np.concatenate([np.eye(int(p.max()) + 1)[p] for p in parts], 1)
    return sum(((x[labels == c] - x[labels == c].mean(0)) ** 2).sum() for c in range(k) if (labels == c).any())


def test_consensus_partition_reaches_the_brute_force_optimum_of_its_objective():
    rng = np.random.default_rng(0)
    for trial in range(5):
        parts = [rng.integers(0, 3, 8) for _ in range(4)]
        best = min(_onehot_sse(parts, np.array(lab), 2) for lab in itertools.product(range(2), repeat=8))
        got = consensus_partition(parts, 2, n_init=20, seed=trial)
        assert set(got.tolist()) <= {0, 1}
        assert _onehot_sse(parts, got, 2) == pytest.approx(best), trial


def test_consensus_of_relabelled_copies_is_that_partition_and_a_majority_wins():
    a = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    perm = np.array([2, 0, 1])
    got = consensus_partition([a, perm[a], a], 3)
    assert nmi(got, a) == pytest.approx(1.0)
    b = a.copy()
    b[0] = 1  # one partition moves point 0 to cluster 1: the two others keep it in cluster 0
    got = consensus_partition([a, b, perm[a]], 3)
    assert nmi(got, a) == pytest.approx(1.0)
    with pytest.raises(Exception, match="different sizes"):
        consensus_partition([a, a[:5]], 3)


def test_align_partition_renames_labels_to_the_references_ids():
    ref = np.array([0, 0, 1, 1, 2, 2])
    lab = np.array([2, 2, 0, 0, 1, 1])
    assert align_partition(lab, ref).tolist() == ref.tolist()
    lab = np.array([1, 1, 1, 0, 0, 0])  # the reference's cluster 1 is split: ids 0 and 1 go to 0 and 2 or 1
    out = align_partition(lab, ref)
    assert out[0] == 0 and out[5] == 2 and len(set(out.tolist())) == 2
    # more label ids than the reference has: the unmatched one takes an unused id
    out = align_partition(np.array([0, 1, 2, 3]), np.array([0, 0, 1, 1]), k=4)
    assert sorted(set(out.tolist())) == [0, 1, 2, 3]


# --- the pseudo-label term -----------------------------------------------------------------------------------
def _gm(**kw):
    from wae.models import create_model

    cfg = RunConfig.from_dict({"model": {"name": "gm-wae", "latent_dim": 2, "num_components": 3, "width": 0.05,
                                         "pseudo_label_weight": 2.0, **kw},
                               "data": {"dataset": "npz:x"}, "train": {"restarts": {"count": 2, "select": "ensemble"},
                                                                       "max_steps": 10}})
    torch.manual_seed(0)
    return create_model(cfg.model, (5,), cfg.model_config)


def test_pseudo_label_term_is_the_mean_cross_entropy_with_its_gradient():
    from wae.models.base import Objective

    model = _gm()
    model.train()
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 1.0, 3.0]], requires_grad=True)
    log_q = torch.log_softmax(logits, -1)
    targets = torch.tensor([0, -1, 1])
    obj = Objective(paper=torch.zeros(()))
    model.add_pseudo_labels(obj, log_q, targets)
    w, value = obj.extras["pseudo_labels"]
    q = torch.softmax(logits.detach(), -1)
    by_hand = (-torch.log(q[0, 0]) - torch.log(q[2, 1])) / 3  # datum 1 has no target; the mean is over all 3
    assert w == 2.0 and float(value.detach()) == pytest.approx(float(by_hand), rel=1e-6)
    value.backward()
    grad = (q - torch.eye(3)[[0, 0, 1]]) / 3  # d CE / d logits = (q - onehot) / N per datum with a target
    grad[1] = 0
    assert torch.allclose(logits.grad, grad, atol=1e-6)  # fails if the sign is flipped or log_q is detached
    assert float(obj.as_dict()["loss"]) == pytest.approx(2.0 * float(by_hand), rel=1e-6)  # added with weight w
    model.eval()
    obj = Objective(paper=torch.zeros(()))
    model.add_pseudo_labels(obj, log_q, targets)
    assert "pseudo_labels" not in obj.extras  # training only


def test_pseudo_labels_in_the_objective_pull_q_towards_the_targets():
    model = _gm()
    model.train()
    x = torch.rand(6, 5)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    terms = model.loss(x, targets=targets)
    logq = model.q_discrete(x)
    assert float(terms["pseudo_labels"]) == pytest.approx(float(-logq.gather(1, targets[:, None]).mean()), rel=1e-4)
    assert "pseudo_labels" not in model.loss(x)  # no targets: no term


def test_pseudo_label_weight_needs_ensemble_restarts():
    d = {"model": {"name": "gm-wae", "pseudo_label_weight": 1.0}, "data": {"dataset": "npz:x"},
         "train": {"max_steps": 10}}
    with pytest.raises(ConfigError, match="restarts.select=ensemble"):
        RunConfig.from_dict(d).validate()
    d["train"].update(restarts={"count": 2, "select": "ensemble"})
    RunConfig.from_dict(d).validate()
    d["model"]["pseudo_label_weight"] = -1.0
    with pytest.raises(ConfigError, match="pseudo_label_weight must be >= 0"):
        _gm(pseudo_label_weight=-1.0)


# --- ensemble restarts ---------------------------------------------------------------------------------------
def _run_cfg(**model):
    return RunConfig.from_dict({
        "model": {"name": "gm-wae", "latent_dim": 3, "num_components": 3, "width": 0.05, **model},
        "data": {"dataset": "npz:unused"},
        "train": {"batch_size": 16, "pretrain_steps": 2, "max_steps": 6, "epochs": 50,
                  "restarts": {"count": 3, "fraction": 4 / 6, "select": "ensemble"}}})


def _data():
    from wae.data import Dataset
    from wae.data.splits import RunData

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (96,), generator=g)
    x = torch.randn(96, 6, generator=g) + 3 * torch.eye(6)[y]
    return RunData(Dataset("blobs", x, y), None, None)


def test_ensemble_keeps_the_start_closest_to_the_consensus_and_returns_it_in_that_starts_ids():
    from wae.training.restarts import _LossTracker, all_assignments, restart_seed, select_start
    from wae.training.run import fit_in_memory

    cfg = _run_cfg(pseudo_label_weight=1.0)
    state, values, targets = select_start(cfg, _data())[:3]
    assigned = []
    for i in range(3):  # each candidate alone, as select_start trains it (no pseudo-labels yet)
        c = _run_cfg()
        c.train.restarts.count, c.train.max_steps, c.train.seed = 1, 4, restart_seed(0, i)
        model, _ = fit_in_memory(c, _data(), callbacks=[_LossTracker()], refit=False)
        a = all_assignments(model, _data().train.x)
        model.eval()
        with torch.no_grad():  # in order, every datum
            assert a.tolist() == model.cluster_probs(_data().train.x).argmax(1).tolist()
        assigned.append(a)
    cons = consensus_partition(assigned, 3, seed=0)
    scores = [nmi(a, cons) for a in assigned]
    assert values == pytest.approx([-s for s in scores], rel=1e-6)
    kept = int(np.argmax(scores))
    assert targets.shape == (96,) and nmi(targets, cons) == pytest.approx(1.0)
    # in the kept start's ids: they overlap its own assignments at least as much as any relabelling would
    agree = (targets == assigned[kept]).mean()
    for perm in itertools.permutations(range(3)):
        assert agree >= (np.array(perm)[targets] == assigned[kept]).mean() - 1e-12


def test_a_run_with_ensemble_restarts_trains_towards_the_consensus_and_keeps_it_on_resume(tmp_path):
    from wae.training.run import prepare

    cfg = _run_cfg(pseudo_label_weight=1.0)
    prep = prepare(cfg, tmp_path / "run", data=_data())
    try:
        assert prep.lit.targets is not None and prep.lit.targets.shape == (96,)
        assert prep.ckpt.offset["targets"] == prep.lit.targets.tolist()
        terms = prep.model.loss(_data().train.x[:16], targets=prep.lit.targets[:16])
        assert "pseudo_labels" in terms
    finally:
        prep.close()
    from wae.training.rundir import _offset_of

    o = _offset_of({"wae_offset": {"steps": 4, "seconds": 1.0, "losses": [0.1], "targets": [0, 2, 1]}})
    assert o["targets"] == [0, 2, 1]
    assert _offset_of({"wae_offset": {"steps": 4, "seconds": 1.0, "targets": ["x"]}})["targets"] is None
