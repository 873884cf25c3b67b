"""Teachers (train.teacher): a label-free partition computed before training sets p(k) and the pseudo-label targets."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from wae.config import RunConfig
from wae.data import Dataset
from wae.data.splits import RunData
from wae.errors import ConfigError


def _data(n=200, share=0.8):
    """Two well-separated blobs in 6-d, ``share`` of the points in the first."""
    g = torch.Generator().manual_seed(0)
    y = (torch.arange(n) >= round(share * n)).long()
    x = torch.randn(n, 6, generator=g) * 0.5 + 4.0 * torch.eye(6)[y * 3]
    return RunData(Dataset("blobs", x, y), None, None)


def _cfg(**model):
    return RunConfig.from_dict({
        "model": {"name": "gm-wae", "latent_dim": 2, "num_components": 2, "width": 0.1, "decoder": "mlp",
                  "discrete_encoder": "mlp", "cost_scale": 0.05, "pseudo_label_weight": 1.0, **model},
        "data": {"dataset": "npz:unused"},
        "train": {"batch_size": 50, "max_steps": 60, "epochs": 1000, "lr": 1e-3, "teacher": "umap-gmm",
                  "restarts": {"count": 2, "fraction": 0.3, "select": "confidence"}}})


@pytest.fixture
def fake_teacher(monkeypatch):
    """The umap-gmm teacher replaced by the blobs' own partition, flipped (ids need not match classes)."""
    from wae.training import teacher

    calls = []

    def fn(x, k, seed):
        calls.append((x.shape, k, seed))
        return (x[:, 3] < 2.0).astype(np.int64)  # first blob → cluster 1, second → 0

    monkeypatch.setitem(teacher.TEACHERS, "umap-gmm", fn)
    return calls


def test_a_teacher_sets_the_prior_weights_to_its_shares_and_its_clusters_are_learnt(fake_teacher):
    from wae.training.run import fit_in_memory

    data = _data(share=0.8)
    model, count = fit_in_memory(_cfg(), data, refit=False)
    assert fake_teacher == [((200, 6), 2, 0)]  # computed once, for every start and the kept run
    # p(k): the teacher's shares (cluster 1 holds the first blob, about 80 %)
    teacher = (data.train.x[:, 3] < 2.0).long()
    share = teacher.float().mean()
    assert 0.75 < share < 0.85
    assert torch.allclose(model.prior.weights, torch.stack([1 - share, share]), atol=1e-6)
    with torch.no_grad():
        pred = model.cluster_probs(data.train.x).argmax(1)
    assert (pred == teacher).float().mean() > 0.95


def test_the_teacher_skips_with_a_warning_when_it_cannot_run(monkeypatch, caplog):
    from wae.training import teacher

    def missing(x, k, seed):
        raise ImportError("umap-learn is not installed")

    monkeypatch.setitem(teacher.TEACHERS, "umap-gmm", missing)
    with caplog.at_level(logging.WARNING, logger="wae"):
        assert teacher.teach("umap-gmm", _data(), 2, 0) == (None, "teacher umap-gmm skipped: umap-learn is not "
                                                               "installed")
    assert "skipped: umap-learn is not installed" in caplog.text
    assert teacher.teach(None, _data(), 2, 0) == teacher.teach("umap-gmm", _data(), 1, 0) == (None, None)


def test_an_empty_teacher_cluster_keeps_a_small_prior_weight(monkeypatch):
    from wae.training import teacher

    monkeypatch.setitem(teacher.TEACHERS, "umap-gmm", lambda x, k, seed: np.zeros(len(x), dtype=np.int64))
    t, note = teacher.teach("umap-gmm", _data(), 4, 0)
    w = t.log_weights.exp()
    floor = teacher.MIN_SHARE / 4
    ref = torch.tensor([1.0, floor, floor, floor]) / (1 + 3 * floor)
    assert torch.allclose(w, ref, atol=1e-7) and "1 of 4 clusters used" in note


def test_the_prior_weight_term_is_the_batch_entropy_when_uniform_and_minus_kl_to_p_otherwise():
    from wae.models import create_model
    from wae.models.base import Objective

    model = create_model("gm-wae", (6,), _cfg(entropy_weight=1.0).model_config)
    q = torch.softmax(torch.randn(32, 2, generator=torch.Generator().manual_seed(1)), 1)
    obj = Objective.__new__(Objective)
    obj.extras = {}
    model.add_entropy(obj, q)
    qbar = q.mean(0)
    assert obj.extras["qD_entropy"][1].item() == (-(qbar * qbar.log()).sum()).item()  # to the bit: uniform p
    p = torch.tensor([0.3, 0.7])
    model.set_cluster_weights(p.log())
    logits = torch.randn(32, 2, generator=torch.Generator().manual_seed(2), requires_grad=True)
    q = torch.softmax(logits, 1)
    model.add_entropy(obj, q)
    ent = obj.extras["qD_entropy"][1]
    qbar = q.mean(0)
    kl = (qbar * (qbar.log() - p.log())).sum()
    assert ent.item() == pytest.approx((-kl - math.log(0.7)).item(), abs=1e-6)
    # its maximum is at q̄ = p: the gradient vanishes there
    at_p = torch.log(p).repeat(32, 1).requires_grad_(True)
    model.add_entropy(obj, torch.softmax(at_p, 1))
    obj.extras["qD_entropy"][1].backward()
    assert at_p.grad.abs().max() < 1e-7
    with pytest.raises(ConfigError, match="no 3-component prior"):
        model.set_cluster_weights(torch.zeros(3))


def test_teacher_settings_are_checked():
    with pytest.raises(ConfigError, match="train.teacher must be null or one of"):
        d = _cfg().to_dict()
        d["train"]["teacher"] = "kmeans"
        RunConfig.from_dict(d).validate()
    # the pseudo-label term needs targets: a teacher's, or the ensemble's starts
    no_teacher = _cfg().to_dict()
    no_teacher["train"]["teacher"] = None
    with pytest.raises(ConfigError, match="pseudo_label_weight needs the targets"):
        RunConfig.from_dict(no_teacher).validate()
    _cfg().validate()


def test_the_estimator_and_a_saved_fit_say_what_the_teacher_gave(fake_teacher, tmp_path, capfd):
    from wae import GMWAEClustering

    X = _data().train.x.numpy()
    est = GMWAEClustering(2, max_steps=20, random_state=0, device="cpu", verbose=True).fit(X)  # cluster-vector
    out = capfd.readouterr().out  # a line before the teacher runs (UMAP takes a minute on large data), one after
    assert "teacher umap-gmm: partitioning the 200 training examples" in out and "2 of 2 clusters used" in out
    assert est.teacher_.startswith("teacher umap-gmm: 2 of 2 clusters used, shares ")  # of the scaled inputs
    est.save(tmp_path / "e")
    assert GMWAEClustering.load(tmp_path / "e").teacher_ == est.teacher_
    assert GMWAEClustering(2, max_steps=20, random_state=0, device="cpu",
                           overrides=["train.teacher=null", "model.pseudo_label_weight=0"]).fit(X).teacher_ is None


def test_a_fit_whose_teacher_cannot_run_says_so(monkeypatch):
    from wae import GMWAEClustering
    from wae.training import teacher

    def missing(x, k, seed):
        raise ImportError("UMAP → GMM baseline not computed: umap-learn is not installed")

    monkeypatch.setitem(teacher.TEACHERS, "umap-gmm", missing)
    est = GMWAEClustering(2, max_steps=10, random_state=0, device="cpu").fit(_data().train.x.numpy())
    assert est.teacher_ == "teacher umap-gmm skipped: UMAP → GMM baseline not computed: umap-learn is not installed"
    assert torch.allclose(est.model_.prior.weights, torch.full((2,), 0.5))  # its own proportions, as without


@pytest.mark.real_teacher
def test_the_real_teacher_is_umap_then_a_gaussian_mixture():
    pytest.importorskip("umap")
    from wae.evaluation.baselines import umap_gmm_baseline
    from wae.training import teacher

    data = _data(share=0.7)
    t, note = teacher.teach("umap-gmm", data, 2, 3)
    ref = umap_gmm_baseline(data.train.x.numpy(), 2, seed=3).labels
    assert np.array_equal(t.targets.numpy(), ref) and note.startswith("teacher umap-gmm: 2 of 2 clusters used")
    assert sorted(np.bincount(ref) / len(ref)) == pytest.approx([0.3, 0.7], abs=0.02)
