"""Tests of wae.data: IDX reading, downloads, the registry and every built-in data set (no network, no shared/)."""
from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wae.data import (Dataset, DatasetInfo, data_search_dirs, download_file, list_datasets, load_dataset, parse_idx,
                      read_idx, resolve_data_dir)
from wae.data import mnist as mnist_mod
from wae.errors import DataError, WAEError

# --- helpers ------------------------------------------------------------------------------------------------------

_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C,
          np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Our own IDX writer: magic (0, 0, dtype code, ndim), big-endian uint32 sizes, big-endian data."""
    arr = np.asarray(arr)
    code = _CODES[arr.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def data_error(fn, *needles: str) -> DataError:
    """Call ``fn``; it must raise a one-line DataError containing every needle."""
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    return info.value


def fake_mnist(d: Path, n_train: int = 12, n_test: int = 7, gz_images: bool = True, seed: int = 0) -> dict:
    """Tiny MNIST-format files in ``d``; returns the arrays."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labs = rng.integers(0, 10, size=n, dtype=np.uint8)
        img_name, lab_name = mnist_mod.IDX_FILES[split]
        write_idx(d / (img_name + (".gz" if gz_images else "")), imgs, gz=gz_images)
        write_idx(d / lab_name, labs)
        out[split] = (imgs, labs)
    return out


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """No test sees the real cache or $WAE_DATA."""
    monkeypatch.delenv("WAE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def http_server(directory: Path):
    """A local HTTP server on 127.0.0.1 serving ``directory``; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --- IDX ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, dtype, gz):
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal((4, 3, 5)) * 100).astype(dtype)
    name = "a.idx.gz" if gz else "a.idx"
    got = read_idx(write_idx(tmp_path / name, arr, gz=gz))
    assert got.dtype == np.dtype(dtype).newbyteorder("=") and got.shape == arr.shape
    np.testing.assert_array_equal(got, arr)
    assert got.flags.writeable


def test_idx_one_dim_and_empty(tmp_path):
    labs = np.arange(10, dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l", labs)), labs)
    empty = parse_idx(idx_bytes(np.zeros((0, 28, 28), np.uint8)))
    assert empty.shape == (0, 28, 28)


def test_idx_gzip_detected_from_content(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "raw-but-named.gz"
    p.write_bytes(idx_bytes(arr))  # e.g. a browser that decompressed on download
    np.testing.assert_array_equal(read_idx(p), arr)


def test_idx_corrupt(tmp_path):
    good = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    cases = {
        "bad magic": (b"\x01" + good[1:], "bad magic"),
        "bad dtype": (good[:2] + b"\x07" + good[3:], "bad magic"),
        "truncated data": (good[:-1], "truncated IDX data"),
        "trailing bytes": (good + b"\x00\x00", "2 trailing bytes"),
        "short header": (good[:3], "truncated IDX header"),
        "truncated header": (good[:9], "truncated IDX header"),
        "zero dims": (bytes([0, 0, 8, 0]), "0 dimensions"),
    }
    for label, (data, needle) in cases.items():
        p = tmp_path / label.replace(" ", "-")
        p.write_bytes(data)
        data_error(lambda: read_idx(p), needle, str(p))
        data_error(lambda: read_idx(write_idx_gz(tmp_path / (p.name + ".gz"), data)), needle)


def write_idx_gz(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data))
    return path


def test_idx_gzip_garbage(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(b"\x1f\x8b" + bytes(range(200)))
    data_error(lambda: read_idx(p), "corrupt gzip")
    good = gzip.compress(idx_bytes(np.zeros((3, 2), np.uint8)))
    p.write_bytes(good[: len(good) // 2])  # truncated gzip stream
    data_error(lambda: read_idx(p), "corrupt gzip")
    data_error(lambda: read_idx(tmp_path / "missing"), "cannot read")
    data_error(lambda: read_idx(tmp_path), "cannot read")  # a directory


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


_VALID = [idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4)),
          idx_bytes(np.arange(6, dtype=">i4").astype("i4")),
          idx_bytes(np.linspace(0, 1, 10).astype("f8").reshape(5, 2))]


@st.composite
def mutated_idx(draw):
    data = bytearray(draw(st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "append", "insert"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "append":
            data += draw(st.binary(max_size=8))
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def test_an_empty_idx_shape_too_big_for_numpy_is_a_data_error(tmp_path):
    """Hypothesis found it: zero elements, but the other dimensions overflow numpy's size type ("array is too big")."""
    import struct

    data = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 0, 0xFFFFFFFF, 0xFFFFFFFF)
    with pytest.raises(DataError, match="not a valid array"):
        parse_idx(data)
    assert parse_idx(bytes([0, 0, 0x08, 2]) + struct.pack(">2I", 0, 5)).shape == (0, 5)


@settings(max_examples=200, deadline=None)
@given(data=st.one_of(st.binary(max_size=64), mutated_idx()), gz=st.booleans())
def test_idx_fuzz_only_array_or_data_error(fuzz_dir, data, gz):
    p = fuzz_dir / "fuzz.idx"
    p.write_bytes(gzip.compress(data) if gz else data)
    for fn in (lambda: read_idx(p), lambda: parse_idx(data)):
        try:
            out = fn()
        except DataError as e:
            assert "\n" not in str(e)
        else:
            assert isinstance(out, np.ndarray)


@settings(max_examples=50, deadline=None)
@given(garbage=st.binary(max_size=64))
def test_idx_fuzz_gzip_garbage(fuzz_dir, garbage):
    p = fuzz_dir / "fuzz.gz"
    p.write_bytes(b"\x1f\x8b" + garbage)
    try:
        assert isinstance(read_idx(p), np.ndarray)
    except DataError:
        pass


# --- MNIST / Fashion-MNIST --------------------------------------------------------------------------------------------


def test_mnist_from_data_dir(tmp_path):
    arrays = fake_mnist(tmp_path)
    for split in ("train", "test"):
        ds = load_dataset("mnist", split, data_dir=tmp_path, download=False)
        imgs, labs = arrays[split]
        assert ds.name == f"mnist:{split}" and ds.num_classes == 10
        assert ds.x.shape == (len(imgs), 1, 28, 28) and ds.x.dtype == torch.float32 and ds.x.is_contiguous()
        assert ds.shape == (1, 28, 28) and len(ds) == len(imgs)
        torch.testing.assert_close(ds.x[:, 0], torch.from_numpy(imgs).float() / 255)
        assert ds.y.dtype == torch.int64 and ds.y.tolist() == labs.tolist()
        assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0


def test_mnist_split_suffix_and_layouts(tmp_path, monkeypatch):
    arrays = fake_mnist(tmp_path / "mnist", gz_images=False)
    # data_dir/<name>
    ds = load_dataset("mnist:test", "train", data_dir=tmp_path, download=False)
    assert ds.name == "mnist:test" and len(ds) == len(arrays["test"][0])
    assert load_dataset("mnist:train:test", data_dir=tmp_path, download=False).name == "mnist:test"  # last wins
    # $WAE_DATA/<name>
    monkeypatch.setenv("WAE_DATA", str(tmp_path))
    assert len(load_dataset("MNIST:train", download=False)) == len(arrays["train"][0])
    # the cache dir ($XDG_CACHE_HOME/wae/<name>)
    monkeypatch.delenv("WAE_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    fake_mnist(tmp_path / "xdg" / "wae" / "fashion-mnist")
    assert load_dataset("fashion_mnist", "test", download=False).name == "fashion-mnist:test"


def test_data_dir_rules(tmp_path, monkeypatch):
    assert resolve_data_dir("mnist", tmp_path) == tmp_path
    assert data_search_dirs("mnist", tmp_path) == [tmp_path, tmp_path / "mnist"]
    monkeypatch.setenv("WAE_DATA", str(tmp_path / "w"))
    assert resolve_data_dir("mnist") == tmp_path / "w" / "mnist"
    assert data_search_dirs("mnist") == [tmp_path / "w" / "mnist", tmp_path / "w"]
    monkeypatch.delenv("WAE_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert resolve_data_dir("svhn") == tmp_path / "c" / "wae" / "svhn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_dir("svhn") == Path.home() / ".cache" / "wae" / "svhn"


def test_mnist_missing_without_download(tmp_path):
    data_error(lambda: load_dataset("mnist", "train", data_dir=tmp_path, download=False),
               "train-images-idx3-ubyte(.gz)", str(tmp_path), "--data-dir")
    fake_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    data_error(lambda: load_dataset("mnist", "train", data_dir=tmp_path, download=False), "train-labels-idx1-ubyte")


def test_mnist_test_split_falls_back_to_the_bundled_official_test_set(tmp_path):
    """With no IDX files anywhere and no download, mnist:test is the official test set that ships with wae (the
    md5 of its decompressed files is the originals'); files present in the data directory still win."""
    ds = load_dataset("mnist", "test", data_dir=tmp_path / "empty", download=False)
    assert ds.x.shape == (10000, 1, 28, 28) and ds.num_classes == 10
    assert torch.bincount(ds.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert ds.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert "official MNIST test set" in ds.description
    fake_mnist(tmp_path)
    assert len(load_dataset("mnist", "test", data_dir=tmp_path, download=False)) == 7  # the local files


def test_bundled_test_set_checksum_is_checked(tmp_path, monkeypatch):
    from wae.data import mnist

    monkeypatch.setattr(mnist, "BUNDLED_TEST_DIR", tmp_path)
    mnist.bundled_mnist_test.cache_clear()
    try:
        data_error(mnist.bundled_mnist_test, "cannot be read", "reinstall")
        import gzip
        (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07"))
        data_error(mnist.bundled_mnist_test, "does not match its checksum", "reinstall")
    finally:
        mnist.bundled_mnist_test.cache_clear()


def test_mnist_corrupt_files(tmp_path):
    fake_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))  # 7 images, 3 labels
    data_error(lambda: load_dataset("mnist", "test", data_dir=tmp_path), "7 images but", "3 labels")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(7, 12, np.uint8))
    data_error(lambda: load_dataset("mnist", "test", data_dir=tmp_path), "label 12")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(7, np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((7, 32, 32), np.uint8), gz=True)
    data_error(lambda: load_dataset("mnist", "test", data_dir=tmp_path), "expected uint8 N×28×28")
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot really gzip")
    data_error(lambda: load_dataset("mnist", "test", data_dir=tmp_path), "corrupt gzip")


# --- downloads ----------------------------------------------------------------------------------------------------


def test_download_file_url_and_checksum(tmp_path):
    src = tmp_path / "src.bin"
    payload = bytes(range(256)) * 50
    src.write_bytes(payload)
    dest_dir = tmp_path / "dest" / "sub"
    out = download_file(src.as_uri(), dest_dir / "f.bin", md5(payload))
    assert out == dest_dir / "f.bin" and out.read_bytes() == payload
    assert sorted(p.name for p in dest_dir.iterdir()) == ["f.bin"]
    # checksum mismatch: DataError, no file and no partial file left
    err = data_error(lambda: download_file(src.as_uri(), dest_dir / "g.bin", "0" * 32), "checksum mismatch", "g.bin")
    assert isinstance(err, WAEError)
    assert sorted(p.name for p in dest_dir.iterdir()) == ["f.bin"]
    data_error(lambda: download_file([], dest_dir / "h.bin"), "no URL")


def test_download_file_http_mirrors(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    payload = b"hello mirror" * 1000
    (served / "file.gz").write_bytes(payload)
    dest = tmp_path / "out" / "file.gz"
    with http_server(served) as base:
        # first mirror 404s, second works
        got = download_file([base + "missing/file.gz", base + "file.gz"], dest, md5(payload), timeout=5)
        assert got.read_bytes() == payload
        dest.unlink()
        data_error(lambda: download_file([base + "file.gz"], dest, md5(b"other"), timeout=5), "checksum mismatch")
        data_error(lambda: download_file([base + "nope"], dest, None, timeout=5), "404")
    assert list(dest.parent.iterdir()) == []


def test_mnist_downloads_when_missing(tmp_path, monkeypatch):
    served = tmp_path / "mirror"
    arrays = fake_mnist(served, gz_images=True)
    for f in ("train-labels-idx1-ubyte",):  # the mirror serves .gz files only
        (served / (f + ".gz")).write_bytes(gzip.compress((served / f).read_bytes()))
    sums = {f: md5((served / (f + ".gz")).read_bytes()) for f in mnist_mod.IDX_FILES["train"]}
    monkeypatch.setitem(mnist_mod.MD5, "mnist", sums)
    target = tmp_path / "data"
    with http_server(served) as base:
        monkeypatch.setitem(mnist_mod.MIRRORS, "mnist", ["http://127.0.0.1:1/", base])  # first mirror refuses
        ds = load_dataset("mnist:train", data_dir=target)
    assert ds.y.tolist() == arrays["train"][1].tolist()
    assert sorted(p.name for p in target.iterdir()) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    # second time: found locally (the server is gone)
    assert len(load_dataset("mnist", "train", data_dir=target)) == len(arrays["train"][0])


def test_mnist_offline_message(tmp_path, monkeypatch):
    monkeypatch.setitem(mnist_mod.MIRRORS, "mnist", ["http://127.0.0.1:1/"])
    data_error(lambda: load_dataset("mnist", data_dir=tmp_path), "train-images-idx3-ubyte(.gz) not found",
               "download failed (offline?)", "place the IDX files there or pass --data-dir")
    assert [p for p in tmp_path.iterdir()] == []


# --- mnist-5k -------------------------------------------------------------------------------------------------------


def test_mnist_5k():
    ds = load_dataset("mnist-5k")
    assert ds.x.shape == (5000, 1, 28, 28) and ds.x.dtype == torch.float32 and ds.x.is_contiguous()
    assert ds.x.min() >= 0 and ds.x.max() <= 1 and ds.x.max() > 0.99
    assert torch.bincount(ds.y).tolist() == [500] * 10 and ds.num_classes == 10
    test = load_dataset("mnist-5k:test")
    assert test.x.shape == (10000, 1, 28, 28) and test.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    again = load_dataset("mnist-5k", "test")
    assert torch.equal(again.x, test.x) and torch.equal(again.y, test.y)
    assert len(load_dataset("mnist-5k:all")) == 5000
    # "test" is the official MNIST test set: none of its digits is among the 5,000 training digits
    flat = ds.x.flatten(1)
    assert not any(bool((flat == test.x[i].flatten()).all(1).any()) for i in range(0, 10000, 97))
    assert "official MNIST test set" in test.description


def test_validation_split_is_carved_from_training_data_and_fixed_across_seeds():
    from wae.config import DataConfig
    from wae.data.splits import load_run_data

    d0 = load_run_data(DataConfig(dataset="mnist-5k", val_fraction=0.06), seed=0)
    d1 = load_run_data(DataConfig(dataset="mnist-5k", val_fraction=0.06, limit=1000), seed=1)
    assert len(d0.train) == 4700 and len(d0.val) == 300 and len(d0.test) == 10000
    assert torch.equal(d0.val.x, d1.val.x)  # the same validation digits whatever the training seed
    # never trained on: no validation digit is among the training digits
    tr = d1.train.x.flatten(1)
    assert len(d1.train) == 1000 and not any(bool((tr == d1.val.x[i].flatten()).all(1).any()) for i in range(300))
    tr0 = d0.train.x.flatten(1)
    assert not any(bool((tr0 == d0.val.x[i].flatten()).all(1).any()) for i in range(0, 300, 7))
    assert load_run_data(DataConfig(dataset="mnist-5k"), 0).val.x.shape[0] == 500  # val_fraction 0.1
    none = load_run_data(DataConfig(dataset="mnist-5k", val_fraction=0.0, evaluate_test=False), 0)
    assert none.val is None and none.test is None and none.held_out[0] == "train" and none.curve[0] == "train"
    assert d0.held_out[0] == "test" and d0.curve[0] == "val"
    data_error(lambda: load_run_data(DataConfig(dataset="mnist-5k", val_fraction=0.99995), 0), "leaves none")


# --- SVHN -----------------------------------------------------------------------------------------------------------


def _svhn_mat(path: Path, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)
    y[0, 0] = 10
    savemat(str(path), {"X": X, "y": y})
    return X, y


def test_svhn_round_trip(tmp_path):
    X, y = _svhn_mat(tmp_path / "train_32x32.mat", 6)
    Xe, ye = _svhn_mat(tmp_path / "extra_32x32.mat", 4, seed=1)
    ds = load_dataset("svhn", "train", data_dir=tmp_path, download=False)
    assert ds.x.shape == (6, 3, 32, 32) and ds.x.is_contiguous() and ds.num_classes == 10
    np.testing.assert_allclose(ds.x.numpy(), X.transpose(3, 2, 0, 1) / 255.0, rtol=0, atol=1e-7)
    expect = y[:, 0].astype(np.int64)
    expect[expect == 10] = 0
    assert ds.y.tolist() == expect.tolist() and ds.y[0] == 0 and int(ds.y.max()) <= 9
    both = load_dataset("svhn:train+extra", data_dir=tmp_path, download=False)
    assert both.x.shape == (10, 3, 32, 32) and torch.equal(both.x[:6], ds.x)
    data_error(lambda: load_dataset("svhn:test", data_dir=tmp_path, download=False), "test_32x32.mat", "--data-dir")


def test_svhn_corrupt(tmp_path):
    from scipy.io import savemat

    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file garbage" + bytes(300))
    data_error(lambda: load_dataset("svhn:test", data_dir=tmp_path, download=False), "cannot read")
    (tmp_path / "test_32x32.mat").write_bytes(b"")
    data_error(lambda: load_dataset("svhn:test", data_dir=tmp_path, download=False), "svhn")
    savemat(str(tmp_path / "test_32x32.mat"), {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1))})
    data_error(lambda: load_dataset("svhn:test", data_dir=tmp_path, download=False), "expected uint8 32×32×3×N")
    savemat(str(tmp_path / "test_32x32.mat"), {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))})
    data_error(lambda: load_dataset("svhn:test", data_dir=tmp_path, download=False), "3 labels for 2 images")
    savemat(str(tmp_path / "test_32x32.mat"), {"X": np.zeros((32, 32, 3, 2), np.uint8)})
    data_error(lambda: load_dataset("svhn:test", data_dir=tmp_path, download=False), "lacks variable")


# --- npz ----------------------------------------------------------------------------------------------------------


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(5, 8, 9), dtype=np.uint8)
    y = np.array([0, 1, 2, 1, 0])
    xt = rng.integers(0, 256, size=(3, 8, 9), dtype=np.uint8)
    p = tmp_path / "d.npz"
    np.savez(p, x=x, y=y, x_test=xt)
    ds = load_dataset(f"npz:{p}")
    assert ds.x.shape == (5, 1, 8, 9) and ds.num_classes == 3 and ds.y.tolist() == y.tolist()
    torch.testing.assert_close(ds.x[:, 0], torch.from_numpy(x).float() / 255)
    test = load_dataset(f"npz:{p}:test")
    assert test.x.shape == (3, 1, 8, 9) and test.y is None
    assert len(load_dataset("npz", "test", path=p)) == 3
    # float in [0, 1] kept, float in [0, 255] scaled, channels last, vectors kept
    xf = rng.random((4, 3, 6, 6)).astype(np.float32)
    np.savez(p, x=xf)
    torch.testing.assert_close(load_dataset("npz", path=p).x, torch.from_numpy(xf))
    np.savez(p, x=xf * 255)
    torch.testing.assert_close(load_dataset("npz", path=p).x, torch.from_numpy(xf), atol=1e-6, rtol=1e-5)
    np.savez(p, x=(xf * 255).astype(np.uint8).transpose(0, 2, 3, 1))
    assert load_dataset("npz", path=p).shape == (3, 6, 6)
    v = rng.standard_normal((7, 2)) * 10
    np.savez(p, x=v, y=np.arange(7) % 2)
    vec = load_dataset("npz", path=p)
    assert vec.shape == (2,) and vec.x.dtype == torch.float32 and torch.allclose(vec.x, torch.from_numpy(v).float())
    np.save(tmp_path / "plain.npy", x)
    assert load_dataset(f"npz:{tmp_path / 'plain.npy'}").x.shape == (5, 1, 8, 9)


def test_npz_bad(tmp_path):
    p = tmp_path / "bad.npz"
    data_error(lambda: load_dataset(f"npz:{p}"), "not found")
    np.savez(p, images=np.zeros((2, 4)))
    data_error(lambda: load_dataset(f"npz:{p}"), "no key 'x'", "images")
    np.savez(p, x=np.zeros((2, 4)))
    data_error(lambda: load_dataset(f"npz:{p}:test"), "no test split")
    np.savez(p, x=np.zeros(5))
    data_error(lambda: load_dataset(f"npz:{p}"), "has shape (5,)")
    np.savez(p, x=np.zeros((2, 3, 4, 5, 6)))
    data_error(lambda: load_dataset(f"npz:{p}"), "has shape")
    np.savez(p, x=np.zeros((2, 7, 8, 9)))
    data_error(lambda: load_dataset(f"npz:{p}"), "channels")
    np.savez(p, x=np.array([[0.0, np.nan]]))
    data_error(lambda: load_dataset(f"npz:{p}"), "NaN")
    np.savez(p, x=np.full((2, 1, 3, 3), 300.0))
    data_error(lambda: load_dataset(f"npz:{p}"), "[0, 255]")
    np.savez(p, x=np.zeros((3, 4)), y=np.zeros(2, int))
    data_error(lambda: load_dataset(f"npz:{p}"), "expected 3 labels")
    np.savez(p, x=np.zeros((2, 4)), y=np.array([0.5, 1.0]))
    data_error(lambda: load_dataset(f"npz:{p}"), "integer class labels")
    np.savez(p, x=np.array([["a", "b"]]))
    data_error(lambda: load_dataset(f"npz:{p}"), "dtype")
    np.savez(p, x=np.array([[{}, 1]], dtype=object))
    data_error(lambda: load_dataset(f"npz:{p}"), "cannot read")
    p.write_bytes(b"PK\x03\x04 not a zip at all")
    data_error(lambda: load_dataset(f"npz:{p}"), "cannot read")
    p.write_bytes(b"")
    data_error(lambda: load_dataset(f"npz:{p}"), "cannot read")
    data_error(lambda: load_dataset("npz"), "no file given")


# --- folder ---------------------------------------------------------------------------------------------------------


def _png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_folder_with_classes(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {}
    for cls, count in (("cat", 2), ("dog", 3)):
        for i in range(count):
            a = rng.integers(0, 256, size=(10, 12), dtype=np.uint8)
            _png(tmp_path / cls / f"{i}.png", a)
            imgs[(cls, i)] = a
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.x.shape == (5, 1, 10, 12) and ds.y.tolist() == [0, 0, 1, 1, 1] and ds.num_classes == 2
    torch.testing.assert_close(ds.x[2, 0], torch.from_numpy(imgs[("dog", 0)]).float() / 255)
    small = load_dataset("folder", path=tmp_path, size=6)
    assert small.x.shape == (5, 1, 6, 6) and 0 <= small.x.min() and small.x.max() <= 1
    data_error(lambda: load_dataset(f"folder:{tmp_path}:test"), "no split 'test'")


def test_folder_flat_rgb_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    _png(tmp_path / "a.png", rng.integers(0, 256, size=(8, 8), dtype=np.uint8))
    _png(tmp_path / "b.PNG", rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8))
    ds = load_dataset("folder", path=tmp_path)
    assert ds.x.shape == (2, 3, 8, 8) and ds.y is None and ds.x.is_contiguous()
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    data_error(lambda: load_dataset(f"folder:{tmp_path}"), "c.jpg")
    (tmp_path / "c.jpg").unlink()
    _png(tmp_path / "sub" / "d.png", np.zeros((8, 8), np.uint8))
    data_error(lambda: load_dataset(f"folder:{tmp_path}"), "both at the top level")
    empty = tmp_path / "empty"
    empty.mkdir()
    data_error(lambda: load_dataset(f"folder:{empty}"), "no png/jpg/jpeg/bmp images")
    data_error(lambda: load_dataset(f"folder:{tmp_path / 'nope'}"), "not found")
    data_error(lambda: load_dataset("folder", path=tmp_path / "sub", size=(0, 3)), "size")


# --- CelebA ---------------------------------------------------------------------------------------------------------


def test_celeba_small(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "celeba"
    (root / "img_align_celeba").mkdir(parents=True)
    lines = []
    for i, part in enumerate([0, 0, 1, 2, 0], 1):
        name = f"{i:06d}.jpg"
        Image.fromarray(rng.integers(0, 256, size=(218, 178, 3), dtype=np.uint8)).save(root / "img_align_celeba" / name)
        lines.append(f"{name} {part}")
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    train = load_dataset("celeba", data_dir=tmp_path)
    assert train.x.shape == (3, 3, 64, 64) and train.x.dtype == torch.float32 and train.y is None
    assert 0 <= train.x.min() and train.x.max() <= 1
    assert load_dataset("celeba:test", data_dir=root).x.shape == (1, 3, 64, 64)
    assert len(load_dataset("celeba:all", data_dir=root, max_images=2)) == 2
    (root / "img_align_celeba" / "000002.jpg").unlink()
    data_error(lambda: load_dataset("celeba", data_dir=root), "000002.jpg", "missing")
    data_error(lambda: load_dataset("celeba", data_dir=tmp_path / "none"), "img_align_celeba", "list_eval_partition",
               "--data-dir")
    (root / "list_eval_partition.txt").write_text("000001.jpg train\n")
    data_error(lambda: load_dataset("celeba", data_dir=root), "line 1")


# --- arcs -----------------------------------------------------------------------------------------------------------


def test_arcs():
    a, b = load_dataset("arcs", n=500), load_dataset("arcs", n=500)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.x.shape == (500, 2) and a.x.dtype == torch.float32 and a.shape == (2,)
    assert sorted(torch.unique(a.y).tolist()) == [0, 1, 2, 3, 4] and a.num_classes == 5
    assert torch.bincount(a.y).tolist() == [100] * 5
    test = load_dataset("arcs:test", n=500)
    assert not torch.equal(test.x, a.x)
    assert not torch.equal(load_dataset("arcs", n=500, seed=3).x, a.x)
    assert len(load_dataset("arcs")) == 10000
    # every point lies near its circle: |x - c_k| ≈ 0.8
    ang = 2 * np.pi * a.y.numpy() / 5
    r = np.hypot(a.x[:, 0].numpy() - np.cos(ang), a.x[:, 1].numpy() - np.sin(ang))
    assert np.abs(r - 0.8).max() < 0.4
    data_error(lambda: load_dataset("arcs", n=0), "positive integer")
    data_error(lambda: load_dataset("arcs", colour=1), "unknown option")


# --- registry, Dataset ----------------------------------------------------------------------------------------------


def test_registry_errors():
    data_error(lambda: load_dataset("imagenet"), "unknown data set 'imagenet'", "mnist", "arcs")
    data_error(lambda: load_dataset("/data/x.npz"), "npz:/path/file.npz")
    data_error(lambda: load_dataset("mnist", "valid"), "no split 'valid'", "train, test")
    data_error(lambda: load_dataset("mnist:bogus"), "no split 'bogus'")
    data_error(lambda: load_dataset("mnist-5k", colour=True), "unknown option(s) colour")
    data_error(lambda: load_dataset(""), "non-empty")


def test_list_datasets():
    infos = list_datasets()
    names = [i.name for i in infos]
    for n in ("mnist", "fashion-mnist", "mnist-5k", "svhn", "celeba", "npz", "folder", "arcs"):
        assert n in names
    assert all(isinstance(i, DatasetInfo) and i.description and i.where for i in infos)
    by = {i.name: i for i in infos}
    assert by["mnist-5k"].available_locally and by["arcs"].available_locally
    assert not by["mnist"].available_locally  # empty cache in the tests


def test_list_datasets_sees_data_dir(tmp_path):
    fake_mnist(tmp_path)
    by = {i.name: i for i in list_datasets(tmp_path)}
    assert by["mnist"].available_locally and str(tmp_path) in by["mnist"].where


def test_dataset_container():
    x = torch.arange(20, dtype=torch.float32).reshape(10, 2)
    ds = Dataset("toy", x, torch.arange(10) % 3, num_classes=3)
    assert len(ds) == 10 and ds.shape == (2,) and not ds.is_image and "toy" in repr(ds)
    s1, s2 = ds.subset(4, seed=1), ds.subset(4, seed=1)
    assert torch.equal(s1.x, s2.x) and len(s1) == 4
    assert torch.equal(s1.y, (s1.x[:, 0] / 2).long() % 3)  # labels stay with their examples
    assert ds.subset(100) is ds
    assert ds.to("cpu").x.device.type == "cpu"
    data_error(lambda: ds.subset(0), "positive integer")
    data_error(lambda: Dataset("bad", torch.zeros(3), None), "N×D")
    data_error(lambda: Dataset("bad", torch.zeros(3, 2), torch.zeros(2)), "3 labels")
