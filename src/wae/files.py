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


def _umask() -> int:
    """The process's file-creation mask (read without changing it where the system shows it)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f.read(65536).splitlines():
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(mask)
    return mask


def atomic_write_with(path: str | Path, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` for a temporary file in the same directory, fsync it, then rename over ``path``.

    A crash at any point leaves either the old file or the new one, never a partial file. The file gets the mode
    any new file of the process gets (0666 less the umask), not the 0600 of a temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    mode = 0o666 & ~_umask()
    try:
        os.close(fd)
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fchmod(f.fileno(), mode)  # after the writer: some replace the file rather than write into it
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
