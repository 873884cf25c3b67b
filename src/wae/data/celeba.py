"""CelebA (aligned and cropped faces), preprocessed as in the WAE paper: centre crop 140×140, resize to 64×64.

CelebA is distributed through Google Drive and cannot be downloaded automatically: put the folder
``img_align_celeba/`` (the aligned JPEGs) and ``list_eval_partition.txt`` in the data directory.

The whole split is decoded into memory (the full training split is about 9.5 GB as float32); pass
``max_images=N`` to load only the first ``N`` images of a split.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from ._images import load_images
from .core import Dataset, data_search_dirs, format_dirs, images_to_tensor, one_line, register_dataset

__all__ = ["CELEBA_SPLITS", "read_partition"]

CELEBA_SPLITS = {"train": 0, "valid": 1, "test": 2}
_PARTITION = "list_eval_partition.txt"
_IMAGES = "img_align_celeba"
_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"


def _fix(dirs: list[Path]) -> str:
    return (f"download img_align_celeba.zip and {_PARTITION} by hand from {_URL} and put the folder {_IMAGES}/ and "
            f"{_PARTITION} in {format_dirs(dirs)}, or pass --data-dir")


def read_partition(path: Path) -> list[tuple[str, int]]:
    """(file name, partition 0/1/2) pairs of ``list_eval_partition.txt``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"celeba: cannot read {path} ({one_line(e)}); replace it with the original file") from e
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2") or "/" in parts[0] or "\\" in parts[0]:
            raise DataError(f"celeba: {path} line {lineno} is {line.strip()[:60]!r}, expected 'NNNNNN.jpg 0|1|2'; "
                            f"replace it with the original file")
        entries.append((parts[0], int(parts[1])))
    if not entries:
        raise DataError(f"celeba: {path} is empty; replace it with the original file")
    return entries


def _locate_root(data_dir: Path | None) -> Path | None:
    for d in data_search_dirs("celeba", data_dir):
        if (d / _PARTITION).is_file() and (d / _IMAGES).is_dir():
            return d
    return None


def _locate(data_dir: Path | None) -> tuple[bool, str]:
    root = _locate_root(data_dir)
    if root is not None:
        return True, str(root)
    return False, f"{format_dirs(data_search_dirs('celeba', data_dir))} (place files by hand, see {_URL})"


@register_dataset("celeba", description="CelebA aligned faces, 163k train / 20k valid / 20k test, crop 140 → 3×64×64 "
                  "(files placed by hand)", splits=("train", "valid", "test", "all"), locate=_locate)
def _celeba(split: str, data_dir: Path | None, max_images: int | None = None, image_size: int = 64,
            crop: int = 140) -> Dataset:
    dirs = data_search_dirs("celeba", data_dir)
    root = _locate_root(data_dir)
    if root is None:
        raise DataError(f"celeba: {_IMAGES}/ and {_PARTITION} not found in {format_dirs(dirs)}; {_fix(dirs)}")
    for key, val in (("max_images", max_images), ("image_size", image_size), ("crop", crop)):
        if val is not None and (isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1):
            raise DataError(f"celeba: {key} must be a positive integer, got {val!r}")
    entries = read_partition(root / _PARTITION)
    names = [f for f, part in entries if split == "all" or part == CELEBA_SPLITS[split]]
    if max_images is not None:
        names = names[: int(max_images)]
    if not names:
        raise DataError(f"celeba: {root / _PARTITION} lists no image for split {split!r}")
    paths = [root / _IMAGES / f for f in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"celeba: {len(missing)} image(s) of split {split!r} missing from {root / _IMAGES}, e.g. "
                        f"{missing[0].name}; {_fix(dirs)}")
    images = load_images(paths, (int(image_size), int(image_size)), "RGB", "celeba", crop=int(crop))
    return Dataset(f"celeba:{split}", images_to_tensor(images, channels_last=True), None)
