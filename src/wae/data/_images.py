"""Image-file helpers (Pillow) shared by the ``celeba`` and ``folder`` loaders."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from .core import one_line

__all__ = ["IMAGE_SUFFIXES", "image_header", "load_images"]

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


def load_images(paths: Sequence[Path], size: tuple[int, int], mode: str, name: str,
                crop: int | None = None) -> np.ndarray:
    """uint8 ``N×H×W×C`` array of the images, converted to ``mode`` ("L" or "RGB").

    Each image is optionally centre-cropped to ``crop×crop`` and then resized to ``size = (H, W)`` (bilinear with
    Pillow's antialiasing when shrinking) if it differs.
    """
    Image = _pil()
    h, w = size
    channels = 1 if mode == "L" else 3
    out = np.empty((len(paths), h, w, channels), dtype=np.uint8)
    for i, path in enumerate(paths):
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
                out[i] = np.asarray(im, dtype=np.uint8).reshape(h, w, channels)
        except DataError:
            raise
        except Exception as e:  # corrupt or truncated file
            raise DataError(f"{name}: cannot read image {path} ({one_line(e)}); fix or remove the file") from e
    return out
