"""Data that stay on disk (issue 36): `npy:` files, npz members stored uncompressed and image folders too large to
hold in memory are streamed — read by row, uint8 until on the device — and give what the in-memory path gives;
outputs are written in chunks; reads are checked against the memory the process may use (RLIMIT_AS, cgroup).

``WAE_IN_MEMORY_BYTES=0`` streams data of any size, so the tests run on small files."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from wae.data import load_dataset
from wae.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def digits(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 28×28 images of three kinds (bars and a diagonal) with noise, and their labels."""
    rng = np.random.default_rng(seed)
    proto = np.zeros((3, 28, 28))
    proto[0, 12:16, 3:-3] = 1
    proto[1, 3:-3, 12:16] = 1
    proto[2] = np.clip(sum(np.eye(28, k=k) for k in (-1, 0, 1)), 0, 1)
    y = rng.integers(0, 3, n)
    x = np.clip(proto[y] * 0.85 + 0.3 * rng.random((n, 28, 28)), 0, 1)
    return (x * 255).astype(np.uint8), y


@pytest.fixture
def streamed(monkeypatch):
    """Every file large enough to stream is streamed (the threshold at 0 bytes)."""
    monkeypatch.setenv("WAE_IN_MEMORY_BYTES", "0")


# --- the sources ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["npy", "npz-stored", "npz-nhwc", "vectors-f8", "images-f4-0-16"])
def test_a_streamed_source_gives_what_the_in_memory_loader_gives(tmp_path, monkeypatch, kind):
    rng = np.random.default_rng(1)
    x, y = digits(50)
    if kind == "npy":
        np.save(tmp_path / "d.npy", x)
        name = f"npy:{tmp_path / 'd.npy'}"
    elif kind == "npz-stored":
        np.savez(tmp_path / "d.npz", x=x, y=y)
        name = f"npz:{tmp_path / 'd.npz'}"
    elif kind == "npz-nhwc":
        np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (30, 9, 7, 3), dtype=np.uint8))
        name = f"npz:{tmp_path / 'd.npz'}"
    elif kind == "vectors-f8":
        np.save(tmp_path / "d.npy", rng.normal(size=(40, 6)) * 100)
        name = f"npy:{tmp_path / 'd.npy'}"
    else:
        np.save(tmp_path / "d.npy", (rng.random((40, 1, 8, 8)) * 16).astype(np.float32))
        name = f"npy:{tmp_path / 'd.npy'}"
    mem = load_dataset(name)
    monkeypatch.setenv("WAE_IN_MEMORY_BYTES", "0")
    disk = load_dataset(name)
    assert disk.streamed and not mem.streamed and disk.shape == mem.shape and len(disk) == len(mem)
    assert torch.equal(disk.x[:], mem.x)
    idx = torch.tensor([7, 3, 3, 0, len(mem) - 1])  # unsorted, repeated
    assert torch.equal(disk.x[idx], mem.x[idx]) and torch.equal(disk.x[5], mem.x[5])
    assert torch.equal(disk.x.decode(disk.x.read(idx)), mem.x[idx])
    # the validation carve and a subset are the same examples, views that read nothing until asked
    (rest, val), (rest_m, val_m) = disk.split_off(9, seed=3), mem.split_off(9, seed=3)
    assert rest.streamed and torch.equal(val.x[:], val_m.x) and torch.equal(rest.x[:], rest_m.x)
    assert torch.equal(rest.subset(11, seed=2).x[:], rest_m.subset(11, seed=2).x)
    if mem.y is not None:
        assert torch.equal(disk.y, mem.y) and torch.equal(val.y, val_m.y)
    if disk.is_image and disk.x.reader.dtype == np.uint8:
        assert disk.x.read(idx).dtype == torch.uint8  # uint8 until on the device


def test_the_choice_is_by_size_with_a_message(tmp_path, monkeypatch, caplog):
    x, _ = digits(100)
    np.save(tmp_path / "d.npy", x)  # 100 × 784 bytes, 392 KiB with its float32 copy
    monkeypatch.setenv("WAE_IN_MEMORY_BYTES", str(400 * 1024))
    with caplog.at_level("WARNING", logger="wae"):
        assert not load_dataset(f"npy:{tmp_path / 'd.npy'}").streamed
    assert not caplog.records
    monkeypatch.setenv("WAE_IN_MEMORY_BYTES", str(300 * 1024))
    with caplog.at_level("WARNING", logger="wae"):
        assert load_dataset(f"npy:{tmp_path / 'd.npy'}").streamed
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "read from disk in batches" in lines[0] and "WAE_IN_MEMORY_BYTES" in lines[0], lines


def test_a_source_never_reads_the_whole_file(tmp_path, streamed):
    """Opening reads only the header; each batch reads its rows' bytes and no more; NumPy's allocations while the
    whole file is read batch by batch stay at a batch (a source that read the whole file would hold 15 MiB)."""
    from wae.data.source import batches

    n, row = 20_000, 28 * 28
    x = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint8, shape=(n, 28, 28))
    x[:] = np.arange(n, dtype=np.uint64)[:, None, None] % 251
    x.flush()
    del x
    tracemalloc.start()
    try:
        ds = load_dataset(f"npy:{tmp_path / 'big.npy'}")
        assert ds.streamed and ds.x.bytes_read == 0
        assert ds.x[[5, 19_999, 3]].shape == (3, 1, 28, 28) and ds.x.bytes_read == 3 * row
        tracemalloc.reset_peak()
        seen = 0
        for xb in batches(ds.x, 512):
            assert float(xb[0, 0, 0, 0]) == pytest.approx(((seen % 251) / 255), abs=1e-7)
            seen += len(xb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == n and ds.x.bytes_read == 3 * row + n * row
    assert peak < 2 * 2 ** 20, peak  # a batch of rows is 0.4 MiB; the file 15 MiB


def test_image_folder_streamed_in_workers(tmp_path, monkeypatch):
    from PIL import Image

    from wae.data.source import batches

    x, y = digits(24)
    for i in range(24):
        d = tmp_path / "img" / f"c{y[i]}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).resize((20, 20)).save(d / f"{i:03d}.png")
    mem = load_dataset(f"folder:{tmp_path / 'img'}", size=(14, 12))
    monkeypatch.setenv("WAE_IN_MEMORY_BYTES", "0")
    disk = load_dataset(f"folder:{tmp_path / 'img'}", size=(14, 12))
    assert disk.streamed and disk.shape == (1, 14, 12) and torch.equal(disk.y, mem.y)
    got = torch.cat(list(batches(disk.x, 5, workers=2)))  # decoded and resized in two DataLoader workers
    assert torch.equal(got, mem.x)


# --- training, evaluation, resume --------------------------------------------------------------------------------


def _train_args(data: str, out: Path, steps: int) -> list[str]:
    return ["train", "gm-wae", "--dataset", data, "--quiet", "--set", "model.width=0.0625", "--set",
            "num_components=3", "--set", "latent_dim=3", "--batch-size", "20", "--set", "pretrain_steps=3",
            "--set", "restarts.count=2", "--set", "restarts.fraction=0.1", "--set", "restarts.select=ensemble", "--set",
            "pseudo_label_weight=1", "--set", "component_refit=true", "--set", "data.limit=150", "--set",
            "figures=false", "--set", "train.sample_metrics=[]", "--set", "checkpoint_every_minutes=0",
            "--max-steps", str(steps), "--out", str(out)]


@pytest.mark.parametrize("kind", ["npz", "folder"])
def test_streamed_training_equals_in_memory_training(tmp_path, monkeypatch, kind):
    """The same run on the same seed — validation carve, limit subset, batches, pre-training, two starts and their
    consensus, component refit — gives the same weights (CPU) whether the data are in memory or streamed
    (folder: decoded in a DataLoader worker)."""
    from wae.cli import main

    x, y = digits(200)
    if kind == "npz":
        np.savez(tmp_path / "d.npz", x=x, y=y)
        data, extra = f"npz:{tmp_path / 'd.npz'}", []
    else:
        from PIL import Image

        for i in range(len(x)):
            Image.fromarray(x[i]).save(tmp_path / f"{i:03d}.png")
        data, extra = f"folder:{tmp_path}", []
    assert main(_train_args(data, tmp_path / "mem", 11) + extra) == 0
    monkeypatch.setenv("WAE_IN_MEMORY_BYTES", "0")
    assert main(_train_args(data, tmp_path / "disk", 11) + extra) == 0
    a, b = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("mem", "disk"))
    assert (tmp_path / "mem" / "model.safetensors").read_bytes() == (tmp_path / "disk" / "model.safetensors").read_bytes()
    assert a["train/steps_kept_run"] == b["train/steps_kept_run"] == 11 and a["train/steps"] == b["train/steps"]
    assert a["val/recon_mse"] == b["val/recon_mse"] and a["val_examples"] == b["val_examples"]
    assert "sample_note" in b and "sample_note" not in a


def test_a_streamed_run_resumes_exactly(tmp_path, streamed):
    """5 steps (mid-epoch), then --resume to 9, gives the weights of one streamed run to 9."""
    from wae.cli import main

    x, y = digits(200)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = f"npz:{tmp_path / 'd.npz'}"
    assert load_dataset(data).streamed
    assert main(_train_args(data, tmp_path / "a", 9)) == 0
    assert main(_train_args(data, tmp_path / "b", 5)) == 0
    assert main(_train_args(data, tmp_path / "b", 9) + ["--resume"]) == 0
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


# --- outputs in chunks --------------------------------------------------------------------------------------------


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_encode_writes_in_chunks_and_its_memory_does_not_grow_with_n(tmp_path, monkeypatch):
    """`wae encode` of a streamed file: the same CSV and npz as from memory; NumPy's peak allocation for 20,000
    examples stays within 1 MiB of that for 2,000 (the codes are written as they come; only the 8-byte cluster of
    each example is kept)."""
    from wae.cli import main

    x, y = digits(200)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    run = tmp_path / "run"
    assert main(_train_args(f"npz:{tmp_path / 'd.npz'}", run, 4)) == 0
    for fmt in ("csv", "npz"):
        assert main(["encode", str(run), "--dataset", f"npz:{tmp_path / 'd.npz'}", "--out",
                     str(tmp_path / f"mem.{fmt}"), "--batch-size", "64"]) == 0
    monkeypatch.setenv("WAE_IN_MEMORY_BYTES", "0")
    for fmt in ("csv", "npz"):
        assert main(["encode", str(run), "--dataset", f"npz:{tmp_path / 'd.npz'}", "--out",
                     str(tmp_path / f"disk.{fmt}"), "--batch-size", "64"]) == 0
    assert (tmp_path / "mem.csv").read_text() == (tmp_path / "disk.csv").read_text()
    a, b = np.load(tmp_path / "mem.npz"), np.load(tmp_path / "disk.npz")
    assert a.files == b.files == ["z", "probs", "cluster", "label"]
    assert all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a.files)
    header, *rows = (tmp_path / "disk.csv").read_text().splitlines()
    assert header.split(",")[:2] == ["cluster", "label"] and len(rows) == 200
    peaks = {}
    for n in (2_000, 20_000):
        big = np.resize(x, (n, 28, 28))
        np.save(tmp_path / f"n{n}.npy", big)
        args = ["encode", str(run), "--dataset", f"npy:{tmp_path / f'n{n}.npy'}", "--out", str(tmp_path / f"n{n}.csv"),
                "--batch-size", "256", "--quiet"]
        peaks[n] = _peak(lambda a=args: main(a))
        assert len((tmp_path / f"n{n}.csv").read_text().splitlines()) == n + 1
    assert peaks[20_000] < peaks[2_000] + 2 ** 20, peaks


def test_parquet_outputs(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from wae.cli import main

    x, y = digits(120)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    run = tmp_path / "run"
    assert main(_train_args(f"npz:{tmp_path / 'd.npz'}", run, 5)) == 0
    for ext in ("csv", "parquet"):
        assert main(["encode", str(run), "--dataset", f"npz:{tmp_path / 'd.npz'}", "--out", str(tmp_path / f"c.{ext}"),
                     "--batch-size", "50"]) == 0
    t = pq.read_table(tmp_path / "c.parquet").to_pandas()
    header, *rows = (tmp_path / "c.csv").read_text().splitlines()
    assert list(t.columns) == header.split(",") and len(t) == 120
    assert np.allclose(t["z0"].to_numpy(), [float(r.split(",")[header.split(",").index("z0")]) for r in rows],
                       rtol=1e-5)
    out = tmp_path / "R"
    assert main(["cluster", f"npz:{tmp_path / 'd.npz'}", "--k", "3", "--max-steps", "5", "--quiet", "--device", "cpu",
                 "--format", "parquet", "--out", str(out)]) == 0
    t = pq.read_table(out / "assignments.parquet").to_pandas()
    assert len(t) == 120 and list(t.columns)[:3] == ["id", "cluster", "confidence"]
    assert np.array_equal(t["cluster"].to_numpy(), t[[f"p_{k}" for k in range(3)]].to_numpy().argmax(1))


def test_parquet_without_pyarrow_is_one_line(tmp_path, monkeypatch):
    import wae.cluster
    from wae.cluster import run_cluster
    from wae.errors import WAEError

    monkeypatch.setattr(wae.cluster, "parquet_available", lambda: False)

    with pytest.raises(WAEError, match="pyarrow"):
        run_cluster("npz:/nonexistent.npz", tmp_path / "R", k=2, fmt="parquet")
    assert not (tmp_path / "R").exists()


def test_the_estimator_predicts_a_memory_map_in_batches(tmp_path, monkeypatch):
    """predict of a 60,000-row uint8 memory map: NumPy's peak allocation stays far below the array's float copy (the
    old whole-array validation held 4 bytes, then 8, per value) and the answers equal those for the array in memory;
    an estimator fitted on a data set predicts the same data streamed from disk as from memory."""
    from wae.estimator import GMWAEClustering

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (60, 8, 8), dtype=np.uint8)
    est = GMWAEClustering(3, max_steps=4, random_state=0, device="cpu").fit(small)
    big = np.lib.format.open_memmap(tmp_path / "m.npy", mode="w+", dtype=np.uint8, shape=(60_000, 8, 8))
    big[:] = np.resize(small, big.shape)
    big.flush()
    mm = np.load(tmp_path / "m.npy", mmap_mode="r")
    peak = _peak(lambda: est.predict(mm))
    assert peak < 2 * 2 ** 20, peak  # the float32 copy alone is 15 MiB
    assert np.array_equal(est.predict(mm), np.resize(est.predict(small), 60_000))
    assert np.array_equal(est.predict_proba(mm[:100]), est.predict_proba(np.asarray(mm[:100])))
    assert np.array_equal(est.transform(mm[:100]), est.transform(np.asarray(mm[:100])))
    # a Dataset: values as its loader gives them (images in [0, 1]), the same whether streamed or in memory
    np.save(tmp_path / "s.npy", small)
    mem = load_dataset(f"npy:{tmp_path / 's.npy'}")
    est2 = GMWAEClustering(3, max_steps=4, random_state=0, device="cpu").fit(mem)
    monkeypatch.setenv("WAE_IN_MEMORY_BYTES", "0")
    disk = load_dataset(f"npy:{tmp_path / 's.npy'}")
    assert disk.streamed
    assert np.array_equal(est2.predict(disk), est2.predict(mem))
    assert np.array_equal(est2.transform(disk), est2.transform(mem))
    assert est2.score(disk) == est2.score(mem)
    est3 = GMWAEClustering(3, max_steps=4, random_state=0, device="cpu").fit(disk)  # fitted streamed: the same
    assert np.array_equal(est3.labels_, est2.labels_) and np.array_equal(est3.predict(mem), est2.predict(mem))


def test_wae_cluster_on_streamed_data_matches_memory_and_says_what_was_sampled(tmp_path, monkeypatch):
    """The same assignments from a streamed file as from memory; with more examples than the figures' sample the
    page says what was sampled."""
    import wae.cluster as C
    from wae.cli import main

    x, y = digits(150)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    common = ["cluster", f"npz:{tmp_path / 'd.npz'}", "--k", "3", "--max-steps", "6", "--quiet", "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "mem")]) == 0
    monkeypatch.setenv("WAE_IN_MEMORY_BYTES", "0")
    monkeypatch.setattr(C, "SAMPLE", 50)
    assert main([*common, "--out", str(tmp_path / "disk")]) == 0
    assert (tmp_path / "mem" / "assignments.csv").read_text() == (tmp_path / "disk" / "assignments.csv").read_text()
    m = json.loads((tmp_path / "disk" / "metrics.json").read_text())
    assert m["sample_examples"] == 50 and m["examples"] == 150 and "acc_hungarian" in m
    page = (tmp_path / "disk" / "report.html").read_text()
    assert "read from disk in batches" in page and "random sample of 50 of the 150" in page


# --- the memory the process may use -------------------------------------------------------------------------------


def test_cgroup_limit_counts(tmp_path, monkeypatch):
    from wae.data.memory import _cgroup_left, memory_limit

    monkeypatch.delenv("WAE_MAX_ARRAY_BYTES", raising=False)
    assert _cgroup_left(tmp_path) is None
    (tmp_path / "memory.max").write_text("max\n")
    assert _cgroup_left(tmp_path) is None
    (tmp_path / "memory.max").write_text(str(3 * 2 ** 20))
    (tmp_path / "memory.current").write_text(str(2 ** 20))
    assert _cgroup_left(tmp_path) == (3 * 2 ** 20, 2 * 2 ** 20)
    limit, why = memory_limit(tmp_path)
    assert limit == 2 * 2 ** 20 and "cgroup" in why


def _bomb(path: Path, shape: tuple[int, ...], dtype: str = "<f4") -> int:
    """An npz whose deflated x member declares ``shape`` (its .npy header and the zip directory agree) while holding
    only the header: refused from its declared size, never inflated."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": dtype, "fortran_order": False, "shape": shape})
    declared = len(head.getvalue()) + int(np.prod(shape)) * np.dtype(dtype).itemsize
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", head.getvalue())
    data = bytearray(path.read_bytes())
    cd = data.rindex(b"PK\x01\x02")
    data[cd + 24: cd + 28] = declared.to_bytes(4, "little")  # the directory's uncompressed size
    path.write_bytes(bytes(data))
    return declared


def test_an_npz_too_large_for_the_address_space_limit_is_one_line(tmp_path):
    """The issue's case: an npz member that inflates to 1.7 GB, read under `ulimit -v 4000000` (4 GB of address
    space, of which torch and the rest already map some): one line naming the file, the size and the limit, exit
    code 2 — not the allocator's RuntimeError."""
    p = tmp_path / "big.npz"
    declared = _bomb(p, (542_091, 28, 28))
    assert 1.6e9 < declared < 1.8e9
    code = ("import resource, sys; from wae.cli import main; "
            "resource.setrlimit(resource.RLIMIT_AS, (4_000_000 * 1024, resource.getrlimit(resource.RLIMIT_AS)[1])); "
            f"sys.exit(main(['cluster', 'npz:{p}', '--k', '2', '--out', '{tmp_path / 'R'}']))")
    env = {k: v for k, v in os.environ.items() if k not in ("WAE_MAX_ARRAY_BYTES", "WAE_IN_MEMORY_BYTES")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**env, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert str(p) in lines[0] and "GiB" in lines[0] and "ulimit -v 4000000" in lines[0], lines[0]
    assert not (tmp_path / "R").exists()


def test_a_compressed_member_above_the_limit_is_refused_but_a_stored_one_streams(tmp_path, monkeypatch):
    x, _ = digits(400)  # 400 × 784 bytes: 1.5 MiB with its float32 copy
    np.savez_compressed(tmp_path / "c.npz", x=x)
    np.savez(tmp_path / "s.npz", x=x)
    monkeypatch.setenv("WAE_MAX_ARRAY_BYTES", str(2 ** 20))
    with pytest.raises(DataError) as e:
        load_dataset(f"npz:{tmp_path / 'c.npz'}")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "c.npz") in msg and "1.0 MiB" in msg and "uncompressed" in msg
    ds = load_dataset(f"npz:{tmp_path / 's.npz'}")
    assert ds.streamed and torch.equal(ds.x.read([3])[0, 0], torch.from_numpy(x[3]))
