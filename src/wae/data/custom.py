"""Your own data: ``npz:/path/file.npz`` and ``npy:/path/file.npy`` (arrays) and ``folder:/path/dir`` (image files).

``npz``
    Keys ``x`` and optionally ``y`` (integer labels); ``x_test``/``y_test`` give a ``test`` split. A plain ``.npy``
    file (``npy:`` or ``npz:``) is read as ``x`` without labels. ``x`` may be

    * images ``N×C×H×W`` (C ≤ 4), ``N×H×W×C`` (channels last, C in 1/3/4, recognised when dimension 1 is > 4), or
      ``N×H×W`` (one channel). Values must be finite and lie in [0, 255] (see :func:`value_scale`): uint8 values
      and values whose maximum exceeds 127 are divided by 255, values in [0, 1] kept, other non-negative values
      (e.g. 0–16) divided by their maximum, with a logged note.
    * vectors ``N×D``: kept as float32 (any finite values), except uint8 ones, divided by 255 with a logged note
      (an (N, 784) uint8 array is flattened images).

    The file is opened with ``allow_pickle=False``: object arrays are refused.

    Large arrays stay on disk: when ``x`` with its float32 copy would take more than
    :func:`~wae.data.memory.in_memory_bytes` (1 GiB, or less when the process may use less), a ``.npy`` file or an npz
    member stored uncompressed (``numpy.savez``, not ``savez_compressed``) is streamed (:mod:`wae.data.source`; a
    one-line message says so); a compressed member is read whole only when it fits the memory the process may use
    (:func:`~wae.data.memory.memory_limit`), else refused in one line naming the file, the size and the limit.

``folder``
    All ``.png/.jpg/.jpeg/.bmp`` files of a directory (case-insensitive suffix, sorted by path). If the directory
    has sub-folders holding images, each sub-folder (sorted by name; searched recursively) is a class and gives the
    labels; otherwise there are no labels. Images are resized to ``size`` (an int or ``(H, W)``; default: the size
    of the first image) and are grayscale if every file is grayscale ("L"/"LA"/"1"), else RGB. A folder whose images
    would take more than :func:`~wae.data.memory.in_memory_bytes` as float32 is streamed: images are decoded and
    resized when read, in DataLoader workers while training (one-line message).
"""
from __future__ import annotations

import logging
import math
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ._images import IMAGE_SUFFIXES, ImageReader, image_header, load_images
from .core import Dataset, images_to_tensor, labels_to_tensor, one_line, register_dataset
from .memory import format_bytes, in_memory_bytes, max_array_bytes, too_big
from .source import ArrayReader, Source

__all__ = ["load_npz", "load_folder", "array_to_x", "value_scale"]

log = logging.getLogger("wae")


# --- npz ----------------------------------------------------------------------------------------------------------


def value_scale(lo: float, hi: float, dtype) -> tuple[float, str | None] | None:
    """The divisor that brings values in [``lo``, ``hi``] of ``dtype`` to [0, 1], with a note saying so (None when
    kept as they are), or None when the values are not intensities (negative, or above 255).

    uint8 → 255; values already in [0, 1] → 1 (no note); non-negative values up to 255 whose maximum exceeds 127 →
    255 (8-bit intensities stored as other numbers); other non-negative values (e.g. 0–16) → their maximum. The same
    rules serve ``npz:`` data and :class:`wae.estimator.GMWAEClustering`."""
    dt = np.dtype(dtype)
    if dt == np.uint8:
        return 255.0, "uint8 values divided by 255"
    if dt == np.bool_ or (lo >= 0 and hi <= 1):
        return 1.0, None
    if lo < 0 or hi > 255:
        return None
    if hi > 127:
        return 255.0, f"values in [{lo:g}, {hi:g}] taken as 8-bit intensities: divided by 255"
    return float(hi), f"values in [{lo:g}, {hi:g}] divided by their maximum {hi:g}"


def array_to_x(x: np.ndarray, what: str) -> torch.Tensor:
    """An ``x`` array (see module doc) → float32 tensor: images ``N×C×H×W`` in [0, 1] or vectors ``N×D``."""
    if x.dtype == np.bool_:
        x = x.astype(np.uint8) * 255
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{what} has dtype {x.dtype}; expected integer or float numbers")
    if x.ndim not in (2, 3, 4) or x.shape[0] == 0 or 0 in x.shape:
        raise DataError(f"{what} has shape {x.shape}; expected N×D vectors or N×C×H×W, N×H×W×C or N×H×W images "
                        f"with N ≥ 1")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] > 4:
        if x.shape[3] not in (1, 3, 4):
            raise DataError(f"{what} has shape {x.shape}; images must be N×C×H×W or N×H×W×C with 1, 3 or 4 "
                            f"channels")
        x = x.transpose(0, 3, 1, 2)
    if x.ndim == 2:  # vectors: keep the values, except uint8 ones (flattened images)
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise DataError(f"{what} contains NaN or infinite values")
        if x.dtype == np.uint8:
            log.warning("%s: uint8 vectors divided by 255 (to [0, 1])", what)
            return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32) / np.float32(255))
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if x.dtype == np.uint8:
        return images_to_tensor(x)
    lo, hi = x.min(), x.max()
    if np.issubdtype(x.dtype, np.floating) and not (np.isfinite(lo) and np.isfinite(hi)):
        raise DataError(f"{what} contains NaN or infinite values")
    rule = value_scale(float(lo), float(hi), x.dtype)
    if rule is None:
        raise DataError(f"{what} has values in [{lo:g}, {hi:g}]; image values must lie in [0, 1] or [0, 255]")
    div, note = rule
    if note and div != 255.0:
        log.warning("%s: image %s", what, note)
    scaled = x.astype(np.float32) / np.float32(div) if div != 1.0 else x.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(scaled))


MAX_LABEL = 1023
"""Labels up to this value are kept; sparse larger ones (ids such as 10^12) are renumbered (see :func:`_labels`)."""


def _labels(y: np.ndarray, n: int, what: str, other: np.ndarray | None = None) -> tuple[torch.Tensor, int]:
    """Integer labels as a tensor, and the number of classes. Labels above :data:`MAX_LABEL` that leave most values
    unused (ids such as 10^12, which would make evaluation allocate a class axis of that length) are renumbered
    0..K−1 in sorted order, over the values of this split and ``other`` (the file's other split) together, so both
    splits keep the same classes; a note says so."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{what} has shape {y.shape}; expected {n} labels (one per example)")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not np.equal(np.mod(y, 1), 0).all():
            raise DataError(f"{what} must hold integer class labels")
        if np.abs(y).max(initial=0) >= 2.0 ** 63:
            raise DataError(f"{what} holds labels beyond the 64-bit integer range")
    elif not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise DataError(f"{what} has dtype {y.dtype}; expected integer class labels")
    if y.dtype == np.uint64 and y.max(initial=0) >= 2 ** 63:
        raise DataError(f"{what} holds labels beyond the 64-bit integer range")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise DataError(f"{what} holds negative labels; labels must be 0..K-1")
    top = int(y.max())
    values = np.unique(y)
    if top > MAX_LABEL and top + 1 > 2 * len(values):
        if other is not None:
            try:
                values = np.union1d(values, np.asarray(other).reshape(-1).astype(np.int64))
            except (TypeError, ValueError):
                pass
        log.warning("%s: labels up to %d renumbered 0..%d in sorted order (%d distinct values)", what, top,
                    len(values) - 1, len(values))
        return labels_to_tensor(np.searchsorted(values, y)), int(len(values))
    return labels_to_tensor(y), top + 1


def _read_header(stream, what: str, available: int) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, header bytes)`` of the ``.npy`` array starting at ``stream``'s position (a
    file or a zip member holding ``available`` bytes from there), checked: numeric dtype, and a data size the
    stream can hold (a header claiming more is refused before anything is allocated)."""
    fmt = np.lib.format
    start = stream.tell()
    version = fmt.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(stream)
    else:
        raise DataError(f"{what}: unsupported .npy format version {version}")
    if dtype.hasobject:
        raise DataError(f"{what}: cannot read an array of Python objects (only numbers are read)")
    head = stream.tell() - start
    nbytes = math.prod(int(d) for d in shape) * dtype.itemsize
    if nbytes > available - head:
        raise DataError(f"{what}: the header declares shape {tuple(shape)} of {dtype} ({nbytes:,} bytes) but only "
                        f"{max(available - head, 0):,} bytes follow; the file is truncated or corrupt")
    return tuple(int(d) for d in shape), bool(fortran), dtype, head


def _need(shape, dtype) -> int:
    """Bytes of an array and its float32 copy."""
    count = math.prod(shape)
    return count * dtype.itemsize + count * 4


def _read_array(stream, what: str, available: int, budget: int) -> np.ndarray:
    """One ``.npy`` array from ``stream`` (a file or a zip member holding ``available`` bytes), read only after its
    header has been checked (:func:`_read_header`) and, with its float32 copy, found within ``budget`` bytes."""
    start = stream.tell()
    shape, _, dtype, _ = _read_header(stream, what, available)
    need = _need(shape, dtype)
    if need > budget:
        raise too_big(f"{what} (shape {shape} of {dtype})", need, "use a smaller file")
    stream.seek(start)
    return np.lib.format.read_array(stream, allow_pickle=False)


def _stored_member_offset(fh, info: zipfile.ZipInfo) -> int | None:
    """The file offset of the data of zip member ``info`` when it is stored uncompressed (else None)."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:  # compressed or encrypted
        return None
    fh.seek(info.header_offset)
    head = fh.read(30)
    if len(head) != 30 or head[:4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _layout(shape: tuple[int, ...], what: str) -> str:
    """How the rows of an ``x`` array of ``shape`` become examples (see :func:`array_to_x`)."""
    if len(shape) not in (2, 3, 4) or shape[0] == 0 or 0 in shape:
        raise DataError(f"{what} has shape {shape}; expected N×D vectors or N×C×H×W, N×H×W×C or N×H×W images "
                        f"with N ≥ 1")
    if len(shape) == 2:
        return "vector"
    if len(shape) == 3:
        return "nhw"
    if shape[1] > 4:
        if shape[3] not in (1, 3, 4):
            raise DataError(f"{what} has shape {shape}; images must be N×C×H×W or N×H×W×C with 1, 3 or 4 channels")
        return "nhwc"
    return "nchw"


def _streamed_x(path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype, what: str) -> Source:
    """``x`` left on disk: the rows of the array at ``offset`` of ``path``, valued as :func:`array_to_x` values
    an array in memory (non-8-bit values are scanned once, in chunks, for their range and NaNs)."""
    if not (dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise DataError(f"{what} has dtype {dtype}; expected integer or float numbers")
    layout = _layout(shape, what)
    src = Source(ArrayReader(path, offset, dtype, shape, layout))
    if dtype in (np.uint8, np.bool_):
        if dtype == np.uint8 and layout == "vector":
            log.warning("%s: uint8 vectors divided by 255 (to [0, 1])", what)
        return src if dtype == np.bool_ else Source(src.reader, 255.0)
    if np.issubdtype(dtype, np.integer) and layout == "vector":
        return src
    st = src.stats()
    if not st["finite"]:
        raise DataError(f"{what} contains NaN or infinite values")
    if layout == "vector":
        return src
    lo, hi = st["min"], st["max"]
    rule = value_scale(lo, hi, dtype)
    if rule is None:
        raise DataError(f"{what} has values in [{lo:g}, {hi:g}]; image values must lie in [0, 1] or [0, 255]")
    div, note = rule
    if note and div != 255.0:
        log.warning("%s: image %s", what, note)
    return Source(src.reader, div)


def _stream_note(what: str, n: int, need: int) -> None:
    log.warning("%s: %s examples (%s in memory with their float32 copy) are read from disk in batches: more than "
                "the %s held in memory (WAE_IN_MEMORY_BYTES sets it)", what, f"{n:,}", format_bytes(need),
                format_bytes(in_memory_bytes()))


def load_npz(path: str | os.PathLike, split: str = "train", kind: str = "npz") -> Dataset:
    """The ``train`` (keys ``x``, ``y``) or ``test`` (``x_test``, ``y_test``) split of an ``.npz`` file, or the
    array of a ``.npy`` file (``train`` only; ``kind`` ``npy`` names it so).

    Memory is bounded before anything is expanded: each member's declared uncompressed size (zip directory) and its
    array header are checked against the file and against :func:`~wae.data.memory.memory_limit` first, so a
    compressed "bomb" or a header claiming a huge shape is refused in one line; a large ``x`` stored uncompressed is
    streamed from disk (see the module doc)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{kind}: file {path} not found; pass {kind}:/path/to/file.{kind}"
                        + (" with keys x (and optionally y)" if kind == "npz" else ""))
    xk, yk = ("x", "y") if split == "train" else (f"x_{split}", f"y_{split}")
    other_yk = "y_test" if split == "train" else "y"
    fix = "save it with numpy.savez(path, x=..., y=...)" if kind == "npz" else "save it with numpy.save(path, x)"
    name = f"npy:{path}" if kind == "npy" else f"npz:{path}:{split}"
    other = None
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
            fh.seek(0)
            if magic == b"\x93NUMPY":  # a .npy file: x only
                if split != "train":
                    raise DataError(f"{kind}: {path} is a single array and has no {split} split")
                x, y = _x_of(fh, f"{kind}: {path}", os.fstat(fh.fileno()).st_size, 0, path, None), None
            elif magic.startswith(b"PK"):
                with zipfile.ZipFile(fh) as zf:
                    x, y, other = _read_keys(zf, fh, path, xk, yk, split, other_yk)
            else:
                raise DataError(f"{kind}: cannot read {path} (neither an .npz nor an .npy file); {fix}")
    except DataError:
        raise
    except Exception as e:  # BadZipFile, ValueError, OSError, EOFError, zlib errors, MemoryError, ...
        raise DataError(f"{kind}: cannot read {path} ({one_line(e)[:200]}); {fix}") from e
    tx = x if isinstance(x, Source) else array_to_x(x, f"{kind}: {path} key {xk}")
    ty, k = (None, None) if y is None else _labels(y, tx.shape[0], f"{kind}: {path} key {yk}", other)
    return Dataset(name, tx, ty, num_classes=k)


def _x_of(stream, what: str, available: int, file_offset: int | None, path: Path, budget: int | None):
    """``x``: read whole (an array) when it fits in memory, else streamed from disk (a :class:`Source`) when
    ``file_offset`` (where the member's bytes start in ``path``) says it is stored uncompressed, else refused."""
    start = stream.tell()
    shape, fortran, dtype, head = _read_header(stream, what, available)
    need = _need(shape, dtype)
    budget = max_array_bytes() if budget is None else budget
    streamable = file_offset is not None and not fortran and len(shape) in (2, 3, 4) and 0 not in shape
    if need <= in_memory_bytes() or (not streamable and need <= budget):
        stream.seek(start)
        return _read_array(stream, what, available, budget)
    if not streamable:
        why = ("it is stored in Fortran order: save numpy.ascontiguousarray(x)" if fortran else
               "store it uncompressed (numpy.savez or a .npy file) to have it read from disk in batches")
        raise too_big(f"{what} (shape {shape} of {dtype})", need, why)
    _stream_note(what, shape[0], need)
    return _streamed_x(path, file_offset + head, shape, dtype, what)


def _read_keys(zf: zipfile.ZipFile, fh, path: Path, xk: str, yk: str, split: str, other_yk: str):
    budget = max_array_bytes()
    members = {(n[:-4] if n.endswith(".npy") else n): n for n in zf.namelist()}
    if xk not in members:
        if split == "train":
            keys = sorted(members)
            shown = ", ".join(k[:40] for k in keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")
            raise DataError(f"npz: {path} has no key 'x' (keys: {shown or 'none'}); save it with "
                            f"numpy.savez(path, x=..., y=...)")
        raise DataError(f"npz: {path} has no {split} split (no key {xk!r}); add {xk}/{yk} arrays for one")
    out = []
    for key in (xk, yk, other_yk):
        if key not in members:
            out.append(None)
            continue
        info = zf.getinfo(members[key])
        what = f"npz: {path} key {key}"
        offset = _stored_member_offset(fh, info) if key == xk else None
        if offset is None and info.file_size > budget:
            raise too_big(f"{what} (declared uncompressed size {format_bytes(info.file_size)})", info.file_size,
                          "use a smaller file")
        if key == other_yk and info.file_size > 64 * 2 ** 20:
            out.append(None)  # only read to renumber labels consistently: skip an implausibly large one
            continue
        with zf.open(info) as member:
            if key == xk:
                value = _x_of(member, what, info.file_size, offset, path, budget)
            else:
                value = _read_array(member, what, info.file_size, budget)
        out.append(value)
        if not isinstance(value, Source):
            budget -= info.file_size
    return out[0], out[1], out[2]


@register_dataset("npz", description="your own arrays: npz:/path/file.npz with keys x (and y; x_test/y_test for a "
                  "test split)", splits=("train", "test"), image=False, path_kw="path",
                  locate=lambda d: (True, "your file: npz:/path/to/file.npz"))
def _npz(split: str, data_dir: Path | None, path: str | os.PathLike | None = None) -> Dataset:
    if path is None or str(path) == "":
        raise DataError("npz: no file given; use npz:/path/to/file.npz (or load_dataset('npz', path=...))")
    p = Path(path).expanduser()
    if not p.is_absolute() and data_dir is not None and not p.exists():
        p = data_dir / p
    return load_npz(p, split)


@register_dataset("npy", description="your own array: npy:/path/file.npy (x only, no labels; large files are read "
                  "from disk in batches)", splits=("train",), image=False, path_kw="path",
                  locate=lambda d: (True, "your file: npy:/path/to/file.npy"))
def _npy(split: str, data_dir: Path | None, path: str | os.PathLike | None = None) -> Dataset:
    if path is None or str(path) == "":
        raise DataError("npy: no file given; use npy:/path/to/file.npy (or load_dataset('npy', path=...))")
    p = Path(path).expanduser()
    if not p.is_absolute() and data_dir is not None and not p.exists():
        p = data_dir / p
    return load_npz(p, split, kind="npy")


# --- folder -------------------------------------------------------------------------------------------------------


def _image_files(d: Path, recursive: bool) -> list[Path]:
    it = d.rglob("*") if recursive else d.iterdir()
    return sorted(p for p in it if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _parse_size(size: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        vals = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size):
        vals = (int(size[0]), int(size[1]))
    else:
        raise DataError(f"folder: size must be an int or (height, width), got {size!r}")
    if min(vals) < 1:
        raise DataError(f"folder: size must be positive, got {size!r}")
    return vals


def load_folder(path: str | os.PathLike, size: int | tuple[int, int] | None = None) -> Dataset:
    """The images of directory ``path`` (see the module doc for labels, size and colour)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"folder: directory {root} not found; pass folder:/path/to/images")
    try:
        class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and _image_files(d, recursive=True))
        top = _image_files(root, recursive=False)
        per_class = [_image_files(d, recursive=True) for d in class_dirs]
    except OSError as e:
        raise DataError(f"folder: cannot list {root} ({one_line(e)})") from e
    if class_dirs and top:
        raise DataError(f"folder: {root} has images both at the top level (e.g. {top[0].name}) and in sub-folders "
                        f"(classes); put all images in class sub-folders or none")
    if class_dirs:
        files = [p for group in per_class for p in group]
        labels = np.concatenate([np.full(len(g), k, dtype=np.int64) for k, g in enumerate(per_class)])
    else:
        files, labels = top, None
    if not files:
        raise DataError(f"folder: no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} images in {root}")
    headers = [image_header(p, "folder") for p in files]
    hw = _parse_size(size) or headers[0][1]
    mode = "L" if all(m in ("L", "LA", "1") for m, _ in headers) else "RGB"
    need = len(files) * hw[0] * hw[1] * (1 if mode == "L" else 3) * 5  # uint8 images and their float32 copy
    y = None if labels is None else labels_to_tensor(labels)
    k = len(class_dirs) if class_dirs else None
    if need > in_memory_bytes():
        _stream_note(f"folder: {root}", len(files), need)
        reader = ImageReader(files, hw, mode, "folder", where=f"folder:{root}")
        return Dataset(f"folder:{root}", Source(reader, 255.0), y, num_classes=k)
    images = load_images(files, hw, mode, "folder")
    return Dataset(f"folder:{root}", images_to_tensor(images, channels_last=True), y, num_classes=k)


@register_dataset("folder", description="your own images: folder:/path/dir of png/jpg/bmp files (class sub-folders "
                  "give labels)", splits=("train",), path_kw="path",
                  locate=lambda d: (True, "your directory: folder:/path/to/dir"))
def _folder(split: str, data_dir: Path | None, path: str | os.PathLike | None = None,
            size: int | tuple[int, int] | None = None) -> Dataset:
    if path is None or str(path) == "":
        raise DataError("folder: no directory given; use folder:/path/to/dir (or load_dataset('folder', path=...))")
    p = Path(path).expanduser()
    if not p.is_absolute() and data_dir is not None and not p.exists():
        p = data_dir / p
    return load_folder(p, size)
