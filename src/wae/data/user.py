"""Data a user points at (``wae cluster DATA``): ``npz:FILE``, ``npy:FILE``, ``folder:DIR``, ``csv:FILE``, a bare
path to such a file or folder, or a registered data set's name — loaded as a :class:`Dataset` with one id per example,
refused in one line (:class:`~wae.errors.DataError`) when its values or images cannot be clustered."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import DataError, WAEError
from ._images import image_header
from .core import DATASETS, Dataset, load_dataset
from .custom import _image_files
from .inputs import check_image_size

__all__ = ["FILE_KINDS", "load_cluster_data"]

FILE_KINDS = {".npz": "npz", ".npy": "npy", ".csv": "csv", ".tsv": "csv", ".tab": "csv", ".txt": "csv"}


def _data_name(spec: str) -> str:
    """``spec`` as a data-set name: registered names as they are; a bare path → ``npz:``/``csv:``/``folder:``."""
    base, sep, _ = spec.partition(":")
    if sep and base.strip().lower().replace("_", "-") in DATASETS:
        return spec
    p = Path(spec).expanduser()
    if p.is_dir():
        return f"folder:{p}"
    if p.is_file() and p.suffix.lower() in FILE_KINDS:
        return f"{FILE_KINDS[p.suffix.lower()]}:{p}"
    if p.suffix.lower() in FILE_KINDS or os.sep in spec:
        raise DataError(f"{spec} not found (a file .npz/.csv/.tsv, a folder of images, or a data set name)")
    return spec


def _parse_size(size: str | None):
    if size is None:
        return None
    try:
        vals = [int(v) for v in str(size).replace("x", ",").split(",") if v.strip()]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2) or min(vals) < 1:
        raise WAEError(f"--size must be H or H,W in pixels, got {size!r}")
    return vals[0] if len(vals) == 1 else (vals[0], vals[1])


def _folder_files(root: Path) -> list[Path]:
    """The image files of a ``folder:`` data set, in the order its loader reads them (class folders sorted)."""
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and _image_files(d, recursive=True))
    if class_dirs:
        return [p for d in class_dirs for p in _image_files(d, recursive=True)]
    return _image_files(root, recursive=False)


def load_cluster_data(spec: str, data_dir: str | None = None, size: str | None = None
                      ) -> tuple[Dataset, list[str] | None, str]:
    """``(dataset, ids, name)``: the data to cluster, one id per example (file paths for a folder; None for row
    numbers) and the data-set name used. Refuses non-finite values, too-small images and (without ``size``) a
    folder of images of different sizes. Large data stay on disk (``ds.streamed``; their loader checked their
    values)."""
    name = _data_name(spec)
    kw = {}
    files = None
    if name.lower().startswith("folder:"):
        root = Path(name.partition(":")[2]).expanduser()
        if not root.is_absolute() and data_dir is not None and not root.exists():
            root = Path(data_dir) / root
        if root.is_dir():
            try:
                files = _folder_files(root)
            except OSError as e:
                raise DataError(f"folder: cannot list {root} ({e.strerror or e})") from None
            hw = _parse_size(size)
            if hw is None and files:
                sizes = {image_header(p, "folder")[1] for p in files}
                if len(sizes) > 1:
                    ex = sorted(sizes)[:3]
                    raise DataError(f"folder: {root} holds images of {len(sizes)} different sizes (e.g. "
                                    f"{', '.join(f'{h}×{w}' for h, w in ex)}); pass --size H or H,W to resize them all")
            if hw is not None:
                kw["size"] = hw
    elif size is not None:
        raise WAEError("--size applies to folder: data only")
    ds = load_dataset(name, "train", data_dir=data_dir, **kw)
    if not ds.streamed and not bool(torch.isfinite(ds.x).all()):
        raise DataError(f"{name} contains NaN or infinite values; drop or fill those examples")
    check_image_size(ds.shape)
    root = Path(name.partition(":")[2]).expanduser() if files is not None else None
    ids = [str(p.relative_to(root)) for p in files] if files is not None and len(files) == len(ds) else None
    return ds, ids, name
