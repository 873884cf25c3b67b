"""Image-file helpers (Pillow) shared by the ``celeba`` and ``folder`` loaders, and the reader of image folders
streamed from disk (:class:`ImageReader`)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from .core import one_line
from .source import available_cpus

__all__ = ["IMAGE_SUFFIXES", "image_header", "load_images", "load_image", "ImageReader"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _pil():
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - Pillow comes with matplotlib
        raise DataError("image data sets need Pillow; install it with `pip install pillow`") from e
    return Image


def image_header(path: Path, name: str) -> tuple[str, tuple[int, int]]:
    """(mode, (height, width)) of an image file, reading only its header."""
    Image = _pil()
    try:
        with Image.open(path) as im:
            return im.mode, (im.size[1], im.size[0])
    except Exception as e:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ValueError, ...
        raise DataError(f"{name}: cannot read image {path} ({one_line(e)}); fix or remove the file") from e


def load_image(path: Path, size: tuple[int, int], mode: str, name: str, crop: int | None = None) -> np.ndarray:
    """One image file as uint8 ``H×W×C``, converted to ``mode`` ("L" or "RGB"), optionally centre-cropped to
    ``crop×crop``, then resized to ``size = (H, W)`` (bilinear with Pillow's antialiasing when shrinking) if it
    differs."""
    Image = _pil()
    h, w = size
    channels = 1 if mode == "L" else 3
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if crop is not None:
                iw, ih = im.size
                if iw < crop or ih < crop:
                    raise DataError(f"{name}: image {path} is {iw}×{ih}, smaller than the {crop}×{crop} crop")
                left, top = (iw - crop) // 2, (ih - crop) // 2
                im = im.crop((left, top, left + crop, top + crop))
            if im.size != (w, h):
                im = im.resize((w, h), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).reshape(h, w, channels)
    except DataError:
        raise
    except Exception as e:  # corrupt or truncated file
        raise DataError(f"{name}: cannot read image {path} ({one_line(e)}); fix or remove the file") from e


def load_images(paths: Sequence[Path], size: tuple[int, int], mode: str, name: str,
                crop: int | None = None) -> np.ndarray:
    """uint8 ``N×H×W×C`` array of the images (each as :func:`load_image` reads it)."""
    h, w = size
    out = np.empty((len(paths), h, w, 1 if mode == "L" else 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = load_image(path, size, mode, name, crop)
    return out


class ImageReader:
    """Image files read when asked (a :class:`~wae.data.source.Reader`): rows are the images of ``files``,
    decoded, converted to ``mode`` and resized to ``size`` as :func:`load_image` does, uint8 ``C×H×W``. Decoding
    pays off in DataLoader workers: :attr:`workers` is min(4, the CPUs this process may use)."""

    def __init__(self, files: Sequence[Path], size: tuple[int, int], mode: str, name: str = "folder",
                 where: str = ""):
        self.files, self.size, self.mode, self.name, self.where = list(files), tuple(size), mode, name, where
        self.n = len(self.files)
        self.example_shape = (1 if mode == "L" else 3, *self.size)
        self.bytes_read = 0
        self.workers = min(4, available_cpus())

    def read(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), self.size[0], self.size[1], self.example_shape[0]), dtype=np.uint8)
        for j, i in enumerate(np.asarray(idx, dtype=np.int64)):
            out[j] = load_image(self.files[int(i)], self.size, self.mode, self.name)
        self.bytes_read += out.nbytes
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    def describe(self) -> str:
        return self.where or f"{self.n} image files"
