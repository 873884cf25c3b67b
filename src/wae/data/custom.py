"""Your own data: ``npz:/path/file.npz`` (arrays) and ``folder:/path/dir`` (image files).

``npz``
    Keys ``x`` and optionally ``y`` (integer labels); ``x_test``/``y_test`` give a ``test`` split. A plain ``.npy``
    file is read as ``x`` without labels. ``x`` may be

    * images ``N×C×H×W`` (C ≤ 4), ``N×H×W×C`` (channels last, C in 1/3/4, recognised when dimension 1 is > 4), or
      ``N×H×W`` (one channel). Values must be finite and lie in [0, 255] (see :func:`value_scale`): uint8 values
      and values whose maximum exceeds 127 are divided by 255, values in [0, 1] kept, other non-negative values
      (e.g. 0–16) divided by their maximum, with a logged note.
    * vectors ``N×D``: kept as float32 (any finite values), except uint8 ones, divided by 255 with a logged note
      (an (N, 784) uint8 array is flattened images).

    The file is opened with ``allow_pickle=False``: object arrays are refused.

``folder``
    All ``.png/.jpg/.jpeg/.bmp`` files of a directory (case-insensitive suffix, sorted by path). If the directory
    has sub-folders holding images, each sub-folder (sorted by name; searched recursively) is a class and gives the
    labels; otherwise there are no labels. Images are resized to ``size`` (an int or ``(H, W)``; default: the size
    of the first image) and are grayscale if every file is grayscale ("L"/"LA"/"1"), else RGB.
"""
from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ._images import IMAGE_SUFFIXES, image_header, load_images
from .core import (Dataset, format_bytes, images_to_tensor, labels_to_tensor, max_array_bytes, one_line,
                   register_dataset)

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


def _read_array(stream, what: str, available: int, budget: int) -> np.ndarray:
    """One ``.npy`` array from ``stream`` (a file or a zip member holding ``available`` bytes), read only after its
    header has been checked: numeric dtype, a data size the stream can hold (a header claiming more is refused
    before anything is allocated) and, with its float32 copy, within ``budget`` bytes."""
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
    count = 1
    for d in shape:
        count *= int(d)
    nbytes = count * dtype.itemsize
    left = available - (stream.tell() - start)
    if nbytes > left:
        raise DataError(f"{what}: the header declares shape {tuple(shape)} of {dtype} ({nbytes:,} bytes) but only "
                        f"{max(left, 0):,} bytes follow; the file is truncated or corrupt")
    need = nbytes + count * 4  # the array and its float32 copy
    if need > budget:
        raise DataError(f"{what}: shape {tuple(shape)} of {dtype} needs {format_bytes(need)} with its float32 copy, "
                        f"more than the {format_bytes(budget)} allowed (the memory available; WAE_MAX_ARRAY_BYTES "
                        "sets it): use a smaller file")
    stream.seek(start)
    return fmt.read_array(stream, allow_pickle=False)


def load_npz(path: str | os.PathLike, split: str = "train") -> Dataset:
    """The ``train`` (keys ``x``, ``y``) or ``test`` (``x_test``, ``y_test``) split of an ``.npz`` file.

    Memory is bounded before anything is expanded: each member's declared uncompressed size (zip directory) and its
    array header are checked against the file and against :func:`~wae.data.core.max_array_bytes` first, so a
    compressed "bomb" or a header claiming a huge shape is refused in one line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"npz: file {path} not found; pass npz:/path/to/file.npz with keys x (and optionally y)")
    xk, yk = ("x", "y") if split == "train" else (f"x_{split}", f"y_{split}")
    other_yk = "y_test" if split == "train" else "y"
    fix = "save it with numpy.savez(path, x=..., y=...)"
    budget = max_array_bytes()
    other = None
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
            fh.seek(0)
            if magic == b"\x93NUMPY":  # a .npy file: x only
                if split != "train":
                    raise DataError(f"npz: {path} is a single array and has no {split} split")
                x, y = _read_array(fh, f"npz: {path}", os.fstat(fh.fileno()).st_size, budget), None
            elif magic.startswith(b"PK"):
                with zipfile.ZipFile(fh) as zf:
                    x, y, other = _read_keys(zf, path, xk, yk, split, budget, other_yk)
            else:
                raise DataError(f"npz: cannot read {path} (neither an .npz nor an .npy file); {fix}")
    except DataError:
        raise
    except Exception as e:  # BadZipFile, ValueError, OSError, EOFError, zlib errors, ...
        raise DataError(f"npz: cannot read {path} ({one_line(e)[:200]}); {fix}") from e
    tx = array_to_x(x, f"npz: {path} key {xk}")
    ty, k = (None, None) if y is None else _labels(y, tx.shape[0], f"npz: {path} key {yk}", other)
    return Dataset(f"npz:{path}:{split}", tx, ty, num_classes=k)


def _read_keys(zf: zipfile.ZipFile, path: Path, xk: str, yk: str, split: str, budget: int, other_yk: str):
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
        if info.file_size > budget:
            raise DataError(f"{what}: its declared uncompressed size, {format_bytes(info.file_size)}, exceeds the "
                            f"{format_bytes(budget)} allowed (the memory available; WAE_MAX_ARRAY_BYTES sets it)")
        if key == other_yk and info.file_size > 64 * 2 ** 20:
            out.append(None)  # only read to renumber labels consistently: skip an implausibly large one
            continue
        with zf.open(info) as member:
            out.append(_read_array(member, what, info.file_size, budget))
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
    if need > max_array_bytes():
        raise DataError(f"folder: {len(files)} images of {hw[0]}×{hw[1]} need {format_bytes(need)}, more than the "
                        f"{format_bytes(max_array_bytes())} allowed (the memory available; WAE_MAX_ARRAY_BYTES sets "
                        "it): pass a smaller size or fewer images")
    images = load_images(files, hw, mode, "folder")
    y = None if labels is None else labels_to_tensor(labels)
    return Dataset(f"folder:{root}", images_to_tensor(images, channels_last=True), y,
                   num_classes=len(class_dirs) if class_dirs else None)


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
