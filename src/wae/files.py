"""Atomic file writes: a crash leaves the old file or the new one, never a partial one (the ground floor: no model,
no training engine)."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_with", "write_json"]


def atomic_write_with(path: str | Path, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` for a temporary file in the same directory, fsync it, then rename over ``path``.

    A crash at any point leaves either the old file or the new one, never a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    def w(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write_with(path, w)


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def _jsonable(v):
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item") and not isinstance(v, (list, dict)):
        try:
            return v.item()
        except Exception:  # noqa: BLE001
            return v
    return v


def write_json(path, data: dict) -> Path:
    clean = {k: _jsonable(v) for k, v in data.items()}
    return atomic_write_text(path, json.dumps(clean, indent=2, sort_keys=True) + "\n")
