"""SVHN, cropped 32×32 digits (format 2): MATLAB files ``{train,test,extra}_32x32.mat``, downloaded on first use."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .core import (Dataset, data_search_dirs, find_file, format_dirs, images_to_tensor, labels_to_tensor, one_line,
                   register_dataset, resolve_data_dir)
from .download import download_file, md5sum

__all__ = ["SVHN_URL", "SVHN_FILES", "read_svhn_mat"]

SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"

SVHN_FILES: dict[str, tuple[str, str]] = {
    "train": ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    "extra": ("extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7"),
}
"""split → (file name, md5)."""


def _load_mat(path: Path) -> dict:
    """``scipy.io.loadmat`` of X and y. SciPy's MAT reader can crash the whole process (a segmentation fault in its C
    code) on a corrupt file, so a file that is not one of SVHN's published ones (by md5) is read first in a forked
    child: a crash there is a :class:`DataError`, and only a file the child read is read here."""
    import multiprocessing as mp

    from scipy.io import loadmat

    if md5sum(path) not in {md5 for _, md5 in SVHN_FILES.values()} and "fork" in mp.get_all_start_methods():
        child = mp.get_context("fork").Process(target=_probe, args=(str(path),))
        child.start()
        child.join()
        if child.exitcode not in (0, 1):
            raise DataError(f"svhn: cannot read {path} (the MAT reader crashed on it, exit code {child.exitcode}); "
                            "replace it (delete it to download it again)")
    return loadmat(str(path), variable_names=["X", "y"])


def _probe(path: str) -> None:
    import faulthandler
    import os

    from scipy.io import loadmat

    faulthandler.disable()  # a crash here is expected and reported by the parent, without a traceback dump

    try:
        loadmat(path, variable_names=["X", "y"])
    except Exception:  # an ordinary error: the parent meets it again and says what it was
        os._exit(1)
    os._exit(0)


def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images 32×32×3×N, int64 labels 0..9) of an SVHN ``.mat`` file; label 10 (digit 0) becomes 0."""
    path = Path(path)
    try:
        mat = _load_mat(path)
    except DataError:
        raise
    except Exception as e:  # scipy raises ValueError, MatReadError, OSError, TypeError, ... on corrupt files
        raise DataError(f"svhn: cannot read {path} ({one_line(e)}); replace it (delete it to download it again)") \
            from e
    if "X" not in mat or "y" not in mat:
        raise DataError(f"svhn: {path} lacks variable X or y; replace it with the original SVHN file")
    X, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    if X.ndim != 4 or X.shape[:3] != (32, 32, 3) or X.dtype != np.uint8:
        raise DataError(f"svhn: {path} has X of {X.dtype} shape {X.shape}, expected uint8 32×32×3×N; replace it")
    n = X.shape[3]
    if y.size != n or not np.issubdtype(y.dtype, np.number):
        raise DataError(f"svhn: {path} has {y.size} labels for {n} images; replace it")
    y = y.reshape(-1)
    if n and (y.min() < 0 or y.max() > 10 or not np.all(np.equal(np.mod(y, 1), 0))):
        raise DataError(f"svhn: {path} has labels outside 1..10; replace it")
    labels = y.astype(np.int64)
    labels[labels == 10] = 0
    return X, labels


def _svhn_file(split: str, data_dir: Path | None, download: bool) -> Path:
    fname, md5 = SVHN_FILES[split]
    dirs = data_search_dirs("svhn", data_dir)
    found = find_file((fname,), dirs)
    if found is not None:
        return found
    fix = "place the .mat files there or pass --data-dir"
    if not download:
        raise DataError(f"svhn: {fname} not found in {format_dirs(dirs)} (download disabled); {fix}")
    try:
        return download_file(SVHN_URL + fname, resolve_data_dir("svhn", data_dir) / fname, md5)
    except DataError as e:
        raise DataError(f"svhn: {fname} not found in {format_dirs(dirs)} and download failed (offline?): {e}; {fix}") \
            from e


def _locate(data_dir: Path | None) -> tuple[bool, str]:
    dirs = data_search_dirs("svhn", data_dir)
    present = [s for s, (f, _) in SVHN_FILES.items() if find_file((f,), dirs)]
    if len(present) == len(SVHN_FILES):
        return True, format_dirs(dirs)
    note = f"found: {', '.join(present)}; " if present else ""
    return False, f"{format_dirs(dirs)} ({note}downloaded on first use)"


@register_dataset("svhn", description="Street View House Numbers, 73k train / 26k test / 531k extra, 3×32×32, "
                  "10 classes", splits=("train", "test", "extra", "train+extra"), locate=_locate)
def _svhn(split: str, data_dir: Path | None, download: bool = True) -> Dataset:
    """``train+extra`` concatenates the two (about 6.5 GB as float32)."""
    parts = ["train", "extra"] if split == "train+extra" else [split]
    xs, ys = [], []
    for part in parts:
        X, labels = read_svhn_mat(_svhn_file(part, data_dir, download))
        xs.append(images_to_tensor(X.transpose(3, 2, 0, 1)))
        ys.append(labels_to_tensor(labels))
        del X
    x = xs[0] if len(xs) == 1 else torch.cat(xs)
    y = ys[0] if len(ys) == 1 else torch.cat(ys)
    return Dataset(f"svhn:{split}", x, y, num_classes=10)
