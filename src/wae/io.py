"""Atomic file writes and safe model export/import (safetensors + YAML, never pickle)."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
import yaml

from .errors import WAEError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_with", "write_json", "save_model", "load_model",
           "load"]


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


def save_model(model, run_dir: str | Path, run_config=None) -> Path:
    """Write ``model.safetensors`` (weights + buffers) and ``model.yaml`` (name, data shape, model config)."""
    from safetensors.torch import save_file

    from .config import to_dict

    run_dir = Path(run_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_with(run_dir / "model.safetensors", lambda tmp: save_file(state, tmp))
    meta = {"model": getattr(model, "registry_name", None) or (run_config.model if run_config else None),
            "data_shape": list(model.data_shape), "model_config": to_dict(model.config)}
    atomic_write_text(run_dir / "model.yaml", yaml.safe_dump(meta, sort_keys=False))
    return run_dir / "model.safetensors"


def load_model(run_dir: str | Path, device: str | torch.device = "cpu"):
    """Rebuild a model from ``model.yaml`` and load ``model.safetensors``. Nothing is unpickled."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .config import from_dict
    from .models.registry import create_model, get_model_entry

    run_dir = Path(run_dir)
    meta_path, w_path = run_dir / "model.yaml", run_dir / "model.safetensors"
    if not run_dir.is_dir():
        raise WAEError(f"{run_dir} is not a run directory")
    for p in (meta_path, w_path):
        if not p.exists():
            raise WAEError(f"{p} is missing: is {run_dir} a finished run? (train writes it at the end)")
    try:
        meta = yaml.safe_load(meta_path.read_text())
        name, shape, mcfg = meta["model"], meta["data_shape"], meta["model_config"]
    except (yaml.YAMLError, KeyError, TypeError, OSError) as e:
        raise WAEError(f"{meta_path} is corrupt ({type(e).__name__})") from None
    entry = get_model_entry(name)
    model = create_model(name, shape, from_dict(entry.config_cls, mcfg, "model"))
    try:
        state = load_file(str(w_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise WAEError(f"{w_path} is corrupt or unreadable ({e})") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise WAEError(f"{w_path} does not match the model ({str(e).strip().splitlines()[0][:200]})") from None
    if missing or unexpected:
        raise WAEError(f"{w_path} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.registry_name = name
    return model.to(device).eval()


def load(run_dir: str | Path, device: str | torch.device = "cpu"):
    """``wae.load(DIR)``: the trained model of a run directory, in eval mode."""
    return load_model(run_dir, device)
