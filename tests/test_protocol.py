"""The evaluation protocol: metrics are named by the split they were measured on, the test split is read only when
asked for, per-epoch curves come from the validation split."""
from __future__ import annotations

import json

import numpy as np
import pytest

from wae.cli import main

TINY = ["--set", "model.width=0.05", "--set", "num_components=3", "--set", "latent_dim=3", "--set", "max_steps=6",
        "--set", "pretrain_steps=0", "--set", "batch_size=16", "--set", "figures=false", "--set",
        "checkpoint_every_minutes=0", "--quiet"]


def _blobs(path, n=120, test=False, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.normal(size=(n, 6)) + 3 * np.eye(6)[y]).astype(np.float32)
    arrays = {"x": x, "y": y}
    if test:
        yt = rng.integers(0, 3, 40)
        arrays.update(x_test=(rng.normal(size=(40, 6)) + 3 * np.eye(6)[yt]).astype(np.float32), y_test=yt)
    np.savez(path, **arrays)
    return path


def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.parametrize("val", ["0.2", "0"])
def test_a_data_set_without_a_test_split_never_produces_test_keys(tmp_path, val):
    data = _blobs(tmp_path / "d.npz")
    run = tmp_path / "run"
    assert main(["train", "gm-wae", "--dataset", f"npz:{data}", "--out", str(run), "--set", f"data.val_fraction={val}",
                 "--set", "eval_every_epochs=1", *TINY]) == 0
    m = _metrics(run)
    assert not [k for k in m if k.startswith("test/")]
    split = "val" if val != "0" else "train"
    assert m["eval_split"] == split and f"{split}/acc_hungarian" in m and f"{split}/recon_mse" in m
    assert "no test split" in m["eval_note"]
    if split == "val":
        assert m["val_examples"] == 24 and m["train_examples"] == 96
    logs = (next(run.glob("logs/version_*")) / "metrics.csv").read_text()
    assert "test/" not in logs and f"{split}/acc_hungarian" in logs  # curves: validation (else training) data


def test_the_test_split_is_read_only_when_asked_for(tmp_path, monkeypatch):
    data = _blobs(tmp_path / "d.npz", test=True)
    run = tmp_path / "run"
    assert main(["train", "gm-wae", "--dataset", f"npz:{data}", "--out", str(run), *TINY]) == 0
    m = _metrics(run)
    assert m["eval_split"] == "test" and m["eval_examples"] == 40 and "test/acc_hungarian" in m
    assert "val/acc_hungarian" in m  # both held-out splits are scored; settings are chosen on val/
    # tuning: data.evaluate_test=false never loads the test split
    import wae.data.splits as splits

    asked = []
    real = splits.load_dataset
    monkeypatch.setattr(splits, "load_dataset", lambda name, split="train", **kw: asked.append((name, split)) or
                        real(name, split, **kw))
    run2 = tmp_path / "run2"
    assert main(["train", "gm-wae", "--dataset", f"npz:{data}", "--out", str(run2), "--set",
                 "data.evaluate_test=false", *TINY]) == 0
    assert all(s != "test" and not n.endswith(":test") for n, s in asked)
    m2 = _metrics(run2)
    assert not [k for k in m2 if k.startswith("test/")] and m2["eval_split"] == "val"
    assert "was not read" in m2["eval_note"]


def test_mnist_5k_is_judged_on_the_official_test_set(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "gm-wae", "--dataset", "mnist-5k", "--out", str(run), "--set", "data.limit=200",
                 "--set", "data.eval_limit=300", "--set", "train.sample_metrics=[]", *TINY[:-1]]) == 0
    m = _metrics(run)
    assert m["eval_dataset"] == "mnist-5k:test" and "official MNIST test set" in m["eval_note"]
    assert m["val_examples"] == 500 and m["train_examples"] == 200
    assert 0 <= m["test/kmeans_acc_hungarian"] <= 1 and 0 <= m["val/kmeans_acc_hungarian"] <= 1
    # the practitioner's baseline on each split, named like k-means', with its seconds (when umap-learn is there)
    pre = "test/umap_gmm_" if "test/umap_gmm_acc_hungarian" in m else None
    if pre:
        assert 0 <= m[pre + "acc_hungarian"] <= 1 and 0 <= m[pre + "nmi"] <= 1 and m[pre + "seconds"] > 0
        assert not [k for k in m if k.startswith("val/umap_gmm")]  # the judged split only
    else:
        assert "umap-learn is not installed" in m["test/umap_gmm_note"]


def test_figures_of_a_small_held_out_split(tmp_path):
    """Fewer held-out images than the figures' usual slices (interpolation pairs from example 40 on): no crash."""
    import torch

    from wae.data import Dataset
    from wae.evaluation.runner import make_figures
    from wae.models import create_model

    torch.manual_seed(0)
    m = create_model("gm-wae", (1, 28, 28), width=0.0625, num_components=3, latent_dim=3).eval()
    ds = Dataset("tiny:test", torch.rand(12, 1, 28, 28), torch.arange(12) % 3)
    names = {p.name for p in make_figures(m, tmp_path, ds)}
    assert {"reconstructions.png", "interpolations.png", "cluster_gallery.png", "cluster_heatmap.png"} <= names


def test_evaluate_with_eval_dataset_on_a_run_that_never_read_its_test_split(tmp_path, capsys):
    """An explicit ``wae evaluate --eval-dataset`` on a run trained with data.evaluate_test=false is honoured and
    said so (before: silently ignored, the validation split scored again); ``--eval-limit`` alone is refused."""
    data = _blobs(tmp_path / "d.npz", test=True)
    other = _blobs(tmp_path / "e.npz", test=True, seed=1)
    run = tmp_path / "run"
    assert main(["train", "gm-wae", "--dataset", f"npz:{data}", "--out", str(run), "--set",
                 "data.evaluate_test=false", "--set", "train.sample_metrics=[]", *TINY]) == 0
    assert _metrics(run)["eval_split"] == "val"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--eval-dataset", f"npz:{other}", "--no-figures", "--metrics", "w2_latent"]) == 0
    out = capsys.readouterr().out
    assert "data.evaluate_test=false" in out and "as asked" in out
    m = _metrics(run)
    assert m["eval_split"] == "test" and m["eval_dataset"] == f"npz:{other}:test" and m["eval_examples"] == 40
    assert "test/acc_hungarian" in m and "test/w2_latent" in m
    assert main(["evaluate", str(run), "--eval-limit", "10", "--no-figures"]) == 2  # one line, exit code 2
    assert "--eval-limit limits the test data" in capsys.readouterr().err
