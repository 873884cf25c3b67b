"""Fuzzing the readers, the config and the command line: a valid result or the library's own one-line error.

Never another exception, never a hang (bounded examples, small inputs).
"""
import gzip
import io
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from wae.errors import WAEError  # noqa: E402

FUZZ = settings(max_examples=100, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


def _one_line(e: BaseException):
    assert isinstance(e, WAEError), f"{type(e).__name__}: {e}"
    assert str(e).strip() and "\n" not in str(e).strip(), repr(str(e))


def _mutate(data: bytes, edits) -> bytes:
    b = bytearray(data)
    for kind, pos, val in edits:
        if not b:
            b = bytearray(b"\0")
        i = pos % len(b)
        if kind == 0:
            b[i] = val
        elif kind == 1:
            del b[i:]
        elif kind == 2:
            b[i:i] = bytes([val]) * (1 + val % 8)
        else:
            b[i:i + 4] = struct.pack(">I", val * 0x01010101)
    return bytes(b)


edits = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2 ** 20), st.integers(0, 255)), max_size=4)

# --- IDX -------------------------------------------------------------------------------------------------------


def _idx(arr: np.ndarray, code: int) -> bytes:
    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


VALID_IDX = [_idx(np.arange(24, dtype=">u1").reshape(2, 3, 4), 0x08), _idx(np.arange(5, dtype=">f4"), 0x0D),
             _idx(np.zeros((0, 7), dtype=">i2"), 0x0B)]


@FUZZ
@given(st.one_of(st.binary(max_size=300),
                 st.tuples(st.sampled_from(VALID_IDX), edits).map(lambda t: _mutate(*t)),
                 st.tuples(st.sampled_from([8, 9, 11, 12, 13, 14, 0, 255]), st.integers(0, 6),
                           st.lists(st.integers(0, 2 ** 32 - 1), max_size=6), st.binary(max_size=64))
                 .map(lambda t: bytes([0, 0, t[0], t[1]]) + struct.pack(f">{len(t[2])}I", *t[2]) + t[3])))
def test_parse_idx_fuzz(data):
    from wae.data.idx import parse_idx, read_idx

    try:
        arr = parse_idx(data, "fuzz")
        assert isinstance(arr, np.ndarray)
    except WAEError as e:
        _one_line(e)
    with tempfile.TemporaryDirectory() as d:
        for name, payload in (("f-idx3-ubyte", data), ("f-idx3-ubyte.gz", gzip.compress(data)),
                              ("g.gz", b"\x1f\x8b" + data)):
            p = Path(d) / name
            p.write_bytes(payload)
            try:
                read_idx(p)
            except WAEError as e:
                _one_line(e)


# --- SVHN .mat -------------------------------------------------------------------------------------------------


def _mat(n=2, dtype=np.uint8, label=3) -> bytes:
    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, {"X": np.ones((32, 32, 3, n), dtype=dtype), "y": np.full((n, 1), label)})
    return buf.getvalue()


@pytest.fixture(scope="module")
def valid_mats():
    return [_mat(), _mat(1, label=10), _mat(2, np.float64), _mat(1, label=11)]


@FUZZ
@given(data=st.data())
def test_svhn_mat_reader_fuzz(valid_mats, data):
    from wae.data import load_dataset
    from wae.data.svhn import read_svhn_mat

    blob = data.draw(st.one_of(st.binary(max_size=400),
                               st.tuples(st.sampled_from(valid_mats), edits).map(lambda t: _mutate(*t))))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "test_32x32.mat"
        p.write_bytes(blob)
        try:
            X, y = read_svhn_mat(p)
            assert X.shape[:3] == (32, 32, 3) and y.dtype == np.int64
        except WAEError as e:
            _one_line(e)
        try:
            load_dataset("svhn", "test", data_dir=d, download=False)
        except WAEError as e:
            _one_line(e)


def test_a_mat_file_that_crashes_scipys_reader_is_a_data_error_not_a_dead_process(tmp_path, monkeypatch):
    """SciPy's MAT reader can die of a segmentation fault on a corrupt file (a fuzzed SVHN file did, in CI): such a
    file is read first in a forked child, whose crash becomes one line."""
    import multiprocessing
    import os
    import signal

    import scipy.io

    from wae.data.svhn import read_svhn_mat

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork start method here")
    monkeypatch.setattr(scipy.io, "loadmat", lambda *a, **k: os.kill(os.getpid(), signal.SIGSEGV))
    p = tmp_path / "test_32x32.mat"
    p.write_bytes(b"MATLAB 5.0 MAT-file, not SVHN's")
    with pytest.raises(WAEError, match="the MAT reader crashed on it") as e:
        read_svhn_mat(p)
    _one_line(e.value)


# --- npz -------------------------------------------------------------------------------------------------------

DTYPES = ["u1", "i4", "i8", "u8", "f2", "f4", "f8", "?", "c8", "U3", "M8[s]", "V4", "<i4,<f4"]


@st.composite
def npz_bytes(draw):
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=0, max_size=5)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    n = int(np.prod(shape)) if shape else 1
    raw = draw(st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize))
    x = np.frombuffer(raw, dtype=dtype).reshape(shape) if n else np.zeros(shape, dtype=dtype)
    arrays = {draw(st.sampled_from(["x", "x_test", "X", "images"])): x}
    if draw(st.booleans()):
        ys = draw(st.lists(st.one_of(st.integers(-3, 2 ** 40), st.floats(allow_nan=True)), max_size=7))
        with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore")
            y = np.array(ys, dtype="f8").astype(draw(st.sampled_from(["i8", "f8", "u1"])))
        arrays[draw(st.sampled_from(["y", "y_test"]))] = y
    buf = io.BytesIO()
    if draw(st.booleans()) and len(arrays) == 1:
        np.save(buf, x)
    else:
        np.savez(buf, **arrays)
    data = buf.getvalue()
    if draw(st.booleans()):
        data = _mutate(data, draw(edits))
    return data


@FUZZ
@given(st.one_of(st.binary(max_size=300), npz_bytes()), st.sampled_from(["", ":test"]))
def test_npz_loader_fuzz(blob, split):
    from wae.data import load_dataset

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.npz"
        p.write_bytes(blob)
        try:
            ds = load_dataset(f"npz:{p}{split}")
            assert ds.x.dtype.is_floating_point and len(ds) >= 1
        except WAEError as e:
            _one_line(e)


# --- image folder ----------------------------------------------------------------------------------------------


def _png(mode="L", size=(3, 2), fmt="PNG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, 7).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def valid_images():
    return [_png(), _png("RGB", (4, 4)), _png("RGBA", (2, 5)), _png("P", (3, 3)), _png("L", (2, 2), "BMP")]


@FUZZ
@given(data=st.data())
def test_image_folder_loader_fuzz(valid_images, data):
    from wae.data import load_dataset

    files = data.draw(st.lists(st.one_of(st.binary(max_size=200),
                                         st.sampled_from(valid_images),
                                         st.tuples(st.sampled_from(valid_images), edits).map(lambda t: _mutate(*t))),
                               min_size=0, max_size=4))
    sub = data.draw(st.lists(st.booleans(), min_size=len(files), max_size=len(files)))
    with tempfile.TemporaryDirectory() as d:
        for i, (blob, in_sub) in enumerate(zip(files, sub)):
            p = Path(d) / (f"c{i % 2}" if in_sub else "") / f"{i}.png"
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(blob)
        try:
            ds = load_dataset(f"folder:{d}")
            assert ds.x.dim() == 4 and len(ds) == len(files)
        except WAEError as e:
            _one_line(e)


# --- config ----------------------------------------------------------------------------------------------------

SECTION_KEYS = {
    "model": ["name", "latent_dim", "width", "lam", "kernel", "bogus"],
    "data": ["dataset", "limit", "eval_limit", "val_fraction", "bogus"],
    "train": ["epochs", "lr", "betas", "batch_size", "on_nan", "lr_milestones", "lr_factors", "seed", "restarts",
              "checkpoint_every_minutes", "max_minutes", "bogus"],
}
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.integers(-2 ** 70, 2 ** 70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.sampled_from(["wae-mmd", "gm-wae", "wae-gan", "1e400", "10" * 200, "true", "[1, 2]"]))
values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                   st.dictionaries(st.text(max_size=4), c, max_size=3)), max_leaves=6)


@st.composite
def run_dicts(draw, wild=True):
    d = {}
    for sec, keys in SECTION_KEYS.items():
        kind = draw(st.integers(0, 5))
        if kind == 0:
            continue
        if kind == 1:
            d[sec] = draw(values) if wild or sec != "model" else {"name": "wae-mmd"}
            continue
        sd = {k: draw(values) for k in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True))}
        if not wild and sec == "model" and isinstance(sd.get("name"), (list, dict)):
            sd["name"] = str(sd["name"])
        if sec == "model" and draw(st.booleans()):
            sd["name"] = draw(st.sampled_from(["wae-mmd", "gm-wae", "nope"]))
        d[sec] = sd
    if draw(st.integers(0, 6)) == 0:
        d[draw(st.one_of(st.text(max_size=3), st.integers(0, 3)) if wild else st.text(max_size=3))] = draw(values)
    return d


def _from_dict_roundtrip(d):
    from wae.config import RunConfig

    try:
        cfg = RunConfig.from_dict(d)
        cfg.validate()
        assert RunConfig.from_yaml(cfg.to_yaml()).to_dict() == cfg.to_dict()
    except WAEError as e:
        _one_line(e)


@FUZZ
@given(run_dicts(wild=False))
def test_run_config_from_dict_fuzz(d):
    """Sections that are mappings (or absent), hashable model names, string keys."""
    _from_dict_roundtrip(d)


@FUZZ
@given(run_dicts())
def test_run_config_from_dict_fuzz_any_shape(d):
    _from_dict_roundtrip(d)


def _unused(d):
    from wae.config import RunConfig

    try:
        cfg = RunConfig.from_dict(d)
        cfg.validate()
        assert RunConfig.from_yaml(cfg.to_yaml()).to_dict() == cfg.to_dict()
    except WAEError as e:
        _one_line(e)


@pytest.mark.parametrize("d", [{"model": 5}, {"model": [1]}, {"model": "abc"}, {"model": {"name": [1]}},
                               {1: 0, "x": 0}], ids=["int", "list", "str", "unhashable-name", "mixed-keys"])
def test_run_config_from_dict_known_crashers(d):
    from wae.config import RunConfig

    with pytest.raises(WAEError):
        RunConfig.from_dict(d)


def test_float_overflow_is_a_config_error():
    from wae.config import RunConfig

    with pytest.raises(WAEError):
        RunConfig.from_dict({"model": {"name": "wae-mmd"}, "train": {"lr": 10 ** 400}})


override_items = st.one_of(
    st.text(max_size=20),
    st.tuples(st.sampled_from(["lr", "train.lr", "model.latent_dim", "latent_dim", "width", "data.limit", "epochs",
                               "train.betas", "seed", "restarts", "restarts.count", "nope", "model.nope", "x.y", "", "train.", "on_nan", "name"]),
              st.one_of(st.text(max_size=12), st.sampled_from(["[1,", "{a: [", "!!python/object:os.system", "&a *a",
                                                               "1e400", "nan", ".inf", "- 1", "0x10", "[[[]]]"])))
    .map(lambda t: f"{t[0]}={t[1]}"))


@FUZZ
@given(st.lists(override_items, max_size=4))
def test_apply_overrides_fuzz(items):
    from wae.config import RunConfig, apply_overrides
    from wae.models.registry import get_model_entry

    entry = get_model_entry("wae-mmd")
    try:
        d = apply_overrides({"model": {"name": "wae-mmd"}}, items, entry.config_cls)
        RunConfig.from_dict(d).validate()
    except WAEError as e:
        _one_line(e)


# --- command line ----------------------------------------------------------------------------------------------

TOKENS = ["train", "sample", "reconstruct", "encode", "evaluate", "reproduce", "datasets", "models", "presets", "config",
          "wae-mmd", "gm-wae", "nope", "--dry-run", "--help", "--version", "--set", "lr=0.1", "lr", "=", "--epochs",
          "-1", "0", "x", "--batch-size", "1", "--lr", "nan", "inf", "--preset", "main", "--dataset", "mnist-5k",
          "npz:/nonexistent.npz", "folder:", "--out", "--n", "--config", "/nonexistent.yaml", "--resume", "--quiet",
          "--seed", "--devices", "a,b", "--metrics", "--component", "--std-scale", "--depth", "--limit", "c.csv", "run", "",
          "-", "--"]


@FUZZ
@given(argv=st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=6)), max_size=7))
def test_cli_argv_fuzz(monkeypatch_session, argv):
    import contextlib

    from wae import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"wae {argv!r} raised {type(e).__name__}: {e}")
    assert rc in (0, 2), (argv, rc, err.getvalue()[-500:])
    if rc == 2:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        assert lines and len([ln for ln in lines if ln.startswith("wae: error")]) == 1, (argv, err.getvalue())


@pytest.fixture(scope="module")
def monkeypatch_session(tmp_path_factory):
    """The CLI fuzz never trains, downloads, or writes outside a temporary directory."""
    from wae import cli, training
    from wae.errors import WAEError as E

    mp = pytest.MonkeyPatch()
    d = tmp_path_factory.mktemp("cli")
    mp.chdir(d)
    mp.setenv("WAE_DATA", str(d / "no-data"))
    mp.setattr(cli, "_default_dataset", lambda: ("mnist-5k", None))

    def no_train(*a, **k):
        raise E("fuzz: training stubbed out")

    mp.setattr(training, "train", no_train)
    mp.setitem(cli.COMMANDS, "reproduce", lambda a: 0)  # experiments train models
    yield
    mp.undo()


# --- hostile files: nested-alias YAML, compressed npz members (issue 26) ---------------------------------------
# Small files that expand without bound must end in one line, fast, without the memory their expansion would take.


@st.composite
def alias_yaml(draw):
    """A config whose train section holds a chain of anchors, each a list of ``fan`` aliases of the previous one
    (``fan ** depth`` values once expanded: a billion laughs at depth 9, fan 10), used by a config key; sometimes a
    self-referring anchor or very deep nesting instead; sometimes all on one line (a --set value)."""
    depth, fan = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    kind = draw(st.sampled_from(["chain", "chain", "chain", "recursive", "deep"]))
    key = draw(st.sampled_from(["seed", "lr", "sample_metrics", "lr_milestones", "betas", "nope", "epochs"]))
    if kind == "recursive":
        value = "&r [1, *r]"
    elif kind == "deep":
        n = draw(st.integers(50, 20000))
        value = "[" * n + "]" * n
    else:
        value = "&a0 [" + ", ".join(["lol"] * fan) + "]"
        for i in range(1, depth):
            value = f"[{value}, &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]]"
    one_line = draw(st.booleans())
    text = (f"{{model: {{name: wae-mmd}}, train: {{{key}: {value}}}}}" if one_line else
            f"model:\n  name: wae-mmd\ntrain:\n  {key}: {value}\n")
    return text, key, value


@FUZZ
@given(alias_yaml())
def test_nested_alias_yaml_is_bounded(doc):
    import time

    from wae.config import RunConfig, apply_overrides, load_yaml
    from wae.models.wae import WAEConfig

    text, key, value = doc
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.yaml"
        p.write_text(text)
        for parse in (lambda: RunConfig.from_yaml(text), lambda: RunConfig.from_dict(load_yaml(p)),
                      lambda: RunConfig.from_dict(apply_overrides({"model": {"name": "wae-mmd"}},
                                                                  [f"train.{key}={value}"], WAEConfig))):
            t0 = time.monotonic()
            try:
                parse()
            except WAEError as e:
                _one_line(e)
                assert len(str(e)) < 600, str(e)[:1000]
            assert time.monotonic() - t0 < 5, (text[:200], time.monotonic() - t0)


def test_billion_laughs_is_refused_at_once():
    import time

    from wae.config import RunConfig

    text = "model: {name: wae-mmd}\ntrain:\n  sample_metrics: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for i in range(1, 10):
        text += f"  x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n"
    text += "  seed: *a9\n"
    assert len(text) < 1000
    t0 = time.monotonic()
    with pytest.raises(WAEError, match="expands to more than"):
        RunConfig.from_yaml(text)
    assert time.monotonic() - t0 < 1


def _zip_member(name: str, payload: bytes, declared: int | None = None) -> bytes:
    """A zip with one deflated member; ``declared`` rewrites the uncompressed size its central directory states."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(zipfile.ZipInfo(name), payload, compress_type=zipfile.ZIP_DEFLATED)
    data = bytearray(buf.getvalue())
    if declared is not None:
        cd = data.rindex(b"PK\x01\x02")
        data[cd + 24: cd + 28] = struct.pack("<I", declared)
    return bytes(data)


@st.composite
def npz_bombs(draw):
    """npz files of deflated zero arrays (a 2000×28×28 float32 member is 6 MiB inflated, a few KiB on disk), with
    their declared uncompressed size or their .npy header's shape sometimes lying."""
    n = draw(st.integers(1, 2000))
    hw = draw(st.sampled_from([(28, 28), (5, 5), (8,)]))
    dtype = np.dtype(draw(st.sampled_from(["u1", "f4", "f8"])))
    shape = (n, *hw)
    head = io.BytesIO()
    fake = draw(st.sampled_from([None, (10 ** 12, 28, 28), (2 ** 40,), (n * 50, *hw), (n, *hw)]))
    np.lib.format.write_array_header_1_0(head, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                "fortran_order": False, "shape": fake or shape})
    payload = head.getvalue() + bytes(int(np.prod(shape)) * dtype.itemsize)
    declared = draw(st.sampled_from([None, None, 0, 100, len(payload) // 2, len(payload) * 2, 2 ** 32 - 1]))
    return _zip_member("x.npy", payload, declared), int(np.prod(fake or shape)) * (dtype.itemsize + 4)


LIMIT = 2 * 2 ** 20  # bytes the arrays read from one file may take in these tests


@FUZZ
@given(npz_bombs())
def test_npz_bombs_are_bounded(bomb):
    import os
    import tracemalloc

    from wae.data import load_dataset

    blob, need = bomb
    old = os.environ.get("WAE_MAX_ARRAY_BYTES")
    os.environ["WAE_MAX_ARRAY_BYTES"] = str(LIMIT)
    try:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "bomb.npz"
            p.write_bytes(blob)
            tracemalloc.start()
            try:
                ds = load_dataset(f"npz:{p}")
                assert len(ds) >= 1 and need <= LIMIT
            except WAEError as e:
                _one_line(e)
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            assert peak < 4 * LIMIT, peak
    finally:
        if old is None:
            os.environ.pop("WAE_MAX_ARRAY_BYTES", None)
        else:
            os.environ["WAE_MAX_ARRAY_BYTES"] = old


def test_deflate_bomb_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    """256 MiB of zeros deflated to a few hundred KiB, and a member whose directory claims 4 GiB: both refused in one
    line from their declared sizes, without inflating them."""
    import time
    import tracemalloc
    import zipfile

    from wae.data import load_dataset

    monkeypatch.setenv("WAE_MAX_ARRAY_BYTES", str(64 * 2 ** 20))
    p = tmp_path / "bomb.npz"
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False, "shape": (2 ** 28,)})
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z, z.open("x.npy", "w", force_zip64=True) as f:
        f.write(head.getvalue())
        zeros = bytes(2 ** 20)
        for _ in range(256):
            f.write(zeros)
    assert p.stat().st_size < 2 ** 20
    forged = tmp_path / "forged.npz"
    forged.write_bytes(_zip_member("x.npy", head.getvalue() + bytes(1000), declared=2 ** 32 - 1))
    for f in (p, forged):
        tracemalloc.start()
        t0 = time.monotonic()
        with pytest.raises(WAEError, match="declared uncompressed size") as e:
            load_dataset(f"npz:{f}")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        _one_line(e.value)
        assert time.monotonic() - t0 < 2 and peak < 8 * 2 ** 20, (f.name, peak)
