"""Safe model export and import: ``model.safetensors`` (weights and buffers) + ``model.yaml`` (name, data shape,
model config). Nothing is ever unpickled."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch
import yaml

from .config import from_dict, migrate, to_dict
from .errors import WAEError
from .files import atomic_write_text, atomic_write_with
from .models.registry import MODELS, create_model, get_model_entry

__all__ = ["save_model", "load_model", "load"]


def save_model(model, run_dir: str | Path, run_config=None) -> Path:
    """Write ``model.safetensors`` (weights + buffers) and ``model.yaml`` (name, data shape, model config)."""
    from safetensors.torch import save_file

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
    name = MODELS.current(name)  # an export from before a rename
    entry = get_model_entry(name)
    if isinstance(mcfg, dict):  # an export from before issue 35: its flat keys moved to today's groups
        mcfg = migrate({"model": mcfg}, {f.name for f in fields(entry.config_cls)})["model"]
    model = create_model(name, shape, from_dict(entry.config_cls, mcfg, "model"))
    try:
        state = load_file(str(w_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise WAEError(f"{w_path} is corrupt or unreadable ({e})") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WAEError(f"{w_path} holds non-finite values (NaN or infinity) in {bad[0][:80]}"
                       + (f" and {len(bad) - 1} more tensor(s)" if len(bad) > 1 else "")
                       + ": the export is corrupt or the training diverged; retrain it or `--resume` its run")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise WAEError(f"{w_path} does not match the model ({str(e).strip().splitlines()[0][:200]})") from None
    if missing or unexpected:
        raise WAEError(f"{w_path} does not match the model: missing {[k[:80] for k in missing[:3]]}, unexpected "
                       f"{[k[:80] for k in unexpected[:3]]}")
    model.registry_name = name
    return model.to(device).eval()


def load(run_dir: str | Path, device: str | torch.device = "cpu"):
    """``wae.load(DIR)``: the trained model of a run directory, in eval mode."""
    return load_model(run_dir, device)
