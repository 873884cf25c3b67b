"""A small CNN classifier per data set, for "domain" FID/KID features and the class purity of mixture components.

Inception features are meaningless on 28×28 grey-scale digits, so the sample-quality metrics also use the 128-d
penultimate layer of a small CNN trained on the data set's own labelled training split (conv(32)-pool-conv(64)-
pool-fc(128)-fc(num_classes)). :func:`get_domain_classifier` trains it once per data set and caches it:

* ``<cache_dir>/<key>.safetensors`` — the weights (safetensors, never pickle),
* ``<cache_dir>/<key>.json`` — data set name, data shape, number of examples, a fingerprint of the training data,
  number of classes, held-out accuracy, training time, …,

both written atomically; ``<key>`` is the data set's name and the first 12 hex digits of the training data's
fingerprint (``mnist-5k-aff27b76306c``), so two training sets of one data set (all 5,000 digits, or the 4,500 left
beside a validation part) keep a classifier each instead of replacing one another. ``cache_dir`` defaults to
``$WAE_CACHE`` (used as is), else ``$XDG_CACHE_HOME/wae/classifiers`` (``~/.cache/wae/classifiers``). A cache
entry whose JSON or weights are unreadable, corrupt or do not match the training data is ignored (a warning) and
the classifier is retrained.

Every domain-FID/KID number must be reported together with ``info["test_accuracy"]``: the accuracy on 10 % of the
training split held out (deterministically) from training.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.source import apply_batched
from ..errors import WAEError
from ..files import atomic_write_bytes, atomic_write_with

__all__ = ["DomainClassifier", "get_domain_classifier", "default_cache_dir", "train_domain_classifier"]

FORMAT_VERSION = 1
FEATURE_DIM = 128
HOLDOUT_FRACTION = 0.1


def default_cache_dir() -> Path:
    """``$WAE_CACHE`` if set, else ``$XDG_CACHE_HOME/wae/classifiers`` (default ``~/.cache/wae/classifiers``)."""
    env = os.environ.get("WAE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "wae" / "classifiers"


class DomainClassifier(nn.Module):
    """conv(32)-pool-conv(64)-pool-fc(128)-fc(num_classes) on C×H×W images in [0, 1].

    An adaptive average pool (to at most 7×7) before the first fully connected layer makes the head independent
    of the image size (28×28 → 7×7 exactly, i.e. plain conv-pool-conv-pool; 32×32 → 8×8 → 7×7; 64×64 → 7×7).
    """

    def __init__(self, in_channels: int, num_classes: int, image_hw: tuple[int, int] = (28, 28)):
        super().__init__()
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        ph = min(7, max(1, self.image_hw[0] // 4))
        pw = min(7, max(1, self.image_hw[1] // 4))
        self.conv = nn.Sequential(
            nn.Conv2d(self.in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d((ph, pw)),
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(64 * ph * pw, FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURE_DIM, self.num_classes)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _check(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            x = torch.as_tensor(np.asarray(x))
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise WAEError(f"domain classifier expects images N×{self.in_channels}×H×W, got {tuple(x.shape)}")
        return x

    def penultimate(self, x: Tensor) -> Tensor:
        return self.fc(self.conv((x - 0.5) / 0.5))

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N × num_classes)."""
        return self.head(self.penultimate(x))

    @torch.no_grad()
    def _batched(self, x: Any, fn, batch_size: int) -> Tensor:
        x = self._check(x)
        was_training = self.training
        self.eval()
        try:
            if x.shape[0] == 0:
                return torch.empty(0, FEATURE_DIM if fn is self.penultimate else self.num_classes)
            return apply_batched(lambda b: fn(b.float()), x, batch_size, self.device)
        finally:
            self.train(was_training)

    def features(self, x: Any, batch_size: int = 500) -> Tensor:
        """The 128-d penultimate-layer features (N × 128, float32 on the CPU)."""
        return self._batched(x, self.penultimate, batch_size)

    def predict_proba(self, x: Any, batch_size: int = 500) -> Tensor:
        """Class probabilities (N × num_classes, on the CPU)."""
        return self._batched(x, lambda t: F.softmax(self(t), dim=1), batch_size)

    def predict(self, x: Any, batch_size: int = 500) -> Tensor:
        return self.predict_proba(x, batch_size).argmax(1)


# --- training ------------------------------------------------------------------------------------------------------


def _base_name(name: str) -> str:
    """``mnist-5k:train`` → ``mnist-5k`` (a Dataset's name carries its split)."""
    return str(name).split(":")[0] if name else "dataset"


def _cache_key(name: str, fingerprint: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", _base_name(name)).strip("._") or "dataset"
    return f"{base}-{fingerprint[:12]}"


def _fingerprint(x: Tensor, y: Tensor) -> str:
    """A cheap fingerprint of the training data: sha256 over (at most) 2,000 evenly spaced examples and all labels."""
    n = x.shape[0]
    idx = torch.linspace(0, n - 1, steps=min(n, 2000)).round().long().unique()
    h = hashlib.sha256()
    h.update(str(tuple(x.shape)).encode())
    h.update(x[idx].detach().cpu().contiguous().to(torch.float32).numpy().tobytes())
    h.update(y.detach().cpu().contiguous().to(torch.int64).numpy().tobytes())
    return h.hexdigest()[:32]


def _num_classes(ds, y: Tensor) -> int:
    k = getattr(ds, "num_classes", None)
    top = int(y.max().item()) + 1 if y.numel() else 0
    return max(int(k) if k else 0, top)


def _split(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Deterministic (train, held-out) index split; 10 % held out (at least 1 example when n ≥ 2)."""
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    n_hold = max(1, int(round(HOLDOUT_FRACTION * n))) if n >= 2 else 0
    return perm[n_hold:], perm[:n_hold]


def train_domain_classifier(train_ds, epochs: int = 3, seed: int = 0, batch_size: int = 64, lr: float = 2e-3,
                            device: str | torch.device | None = None) -> tuple[DomainClassifier, dict]:
    """Train a :class:`DomainClassifier` on 90 % of ``train_ds`` (labels required); returns (classifier, info)."""
    x, y = getattr(train_ds, "x", None), getattr(train_ds, "y", None)
    name = getattr(train_ds, "name", "dataset")
    if y is None:
        raise WAEError(f"{name}: the domain classifier needs class labels, and this data set has none")
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise WAEError(f"{name}: the domain classifier needs image data (N×C×H×W), got shape "
                       f"{tuple(getattr(x, 'shape', ()))}")
    if x.shape[0] < 2:
        raise WAEError(f"{name}: the domain classifier needs at least 2 labelled examples")
    if epochs < 1:
        raise WAEError(f"domain classifier: epochs must be ≥ 1, got {epochs}")
    y = y.long().cpu()
    if y.min().item() < 0:
        raise WAEError(f"{name}: class labels must be non-negative integers")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    num_classes = _num_classes(train_ds, y)
    tr, ho = _split(x.shape[0], seed)
    xc = x.detach().cpu().float()
    x_tr, y_tr = xc[tr].to(dev), y[tr].to(dev)

    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        clf = DomainClassifier(x.shape[1], num_classes, (x.shape[2], x.shape[3])).to(dev)
        opt = torch.optim.Adam(clf.parameters(), lr=lr)
        steps_per_epoch = math.ceil(x_tr.shape[0] / batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
        g = torch.Generator().manual_seed(int(seed) + 1)
        clf.train()
        with torch.enable_grad():
            for _ in range(epochs):
                perm = torch.randperm(x_tr.shape[0], generator=g).to(dev)
                for s in range(0, x_tr.shape[0], batch_size):
                    idx = perm[s: s + batch_size]
                    loss = F.cross_entropy(clf(x_tr[idx]), y_tr[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
    clf.eval()
    train_time = time.perf_counter() - t0
    acc = float((clf.predict(xc[ho]) == y[ho]).float().mean().item()) if ho.numel() else float("nan")
    info = {
        "format_version": FORMAT_VERSION,
        "dataset": _base_name(name),
        "data_shape": [int(s) for s in x.shape[1:]],
        "n_examples": int(x.shape[0]),
        "n_train": int(tr.numel()),
        "n_holdout": int(ho.numel()),
        "num_classes": int(num_classes),
        "fingerprint": _fingerprint(x, y),
        "test_accuracy": acc,
        "epochs": int(epochs),
        "seed": int(seed),
        "train_seconds": round(train_time, 3),
        "feature_dim": FEATURE_DIM,
    }
    return clf, info


# --- the cache -----------------------------------------------------------------------------------------------------


def _load_cached(weights: Path, meta: Path, train_ds, fingerprint: str,
                 device) -> tuple[DomainClassifier, dict] | None:
    """The cached classifier when both files exist, parse and match ``train_ds`` (whose :func:`_fingerprint` is
    ``fingerprint``); None when absent.

    Raises ``ValueError`` (with the reason) for a corrupt or mismatching entry.
    """
    if not weights.exists() and not meta.exists():
        return None
    if not weights.exists() or not meta.exists():
        raise ValueError("one of the two cache files is missing")
    try:
        info = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"unreadable JSON ({type(e).__name__})") from None
    if not isinstance(info, dict):
        raise ValueError("the JSON is not an object")
    x = train_ds.x
    want = {
        "format_version": FORMAT_VERSION,
        "data_shape": [int(s) for s in x.shape[1:]],
        "n_examples": int(x.shape[0]),
        "fingerprint": fingerprint,
    }
    for k, v in want.items():
        if info.get(k) != v:
            raise ValueError(f"{k} differs (cached {info.get(k)!r}, now {v!r})")
    try:
        num_classes = int(info["num_classes"])
        acc = float(info["test_accuracy"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("the JSON lacks num_classes or test_accuracy") from None
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError for corrupt files
        raise ValueError(f"unreadable weights ({type(e).__name__})") from None
    clf = DomainClassifier(x.shape[1], num_classes, (x.shape[2], x.shape[3]))
    try:
        clf.load_state_dict(state, strict=True)
    except RuntimeError:
        raise ValueError("the weights do not fit the network") from None
    if not all(torch.isfinite(t).all() for t in state.values()) or not math.isfinite(acc):
        raise ValueError("non-finite weights or accuracy")
    clf.eval()
    if device is not None:
        clf.to(device)
    return clf, info


def _save(weights: Path, meta: Path, clf: DomainClassifier, info: dict) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in clf.state_dict().items()}
    atomic_write_with(weights, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    # The JSON last: an entry whose JSON exists has its weights written.
    atomic_write_bytes(meta, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())


def get_domain_classifier(dataset_name: str | None, train_ds, cache_dir: str | os.PathLike | None = None,
                          epochs: int = 3, seed: int = 0, device: str | torch.device | None = None,
                          retrain: bool = False) -> tuple[DomainClassifier, dict]:
    """The domain classifier of a data set: loaded from the cache, else trained on ``train_ds`` and cached.

    ``dataset_name`` names the cache entry (the split suffix of ``mnist-5k:train`` is dropped; None uses
    ``train_ds.name``). Labels are required (:class:`WAEError` otherwise). Returns ``(classifier, info)``;
    ``info`` holds ``test_accuracy`` (held-out 10 % of the training split), ``dataset``, ``data_shape``,
    ``n_examples``, ``from_cache`` (True when loaded), ``cache_path`` and the training settings. A corrupt or
    mismatching cache entry is reported with a warning and replaced; a cache that cannot be written only warns.
    """
    name = dataset_name or getattr(train_ds, "name", None) or "dataset"
    if getattr(train_ds, "y", None) is None:
        raise WAEError(f"{name}: the domain classifier needs class labels, and this data set has none")
    if not isinstance(train_ds.x, Tensor) or train_ds.x.dim() != 4:
        raise WAEError(f"{name}: the domain classifier needs image data (N×C×H×W), got shape "
                       f"{tuple(getattr(train_ds.x, 'shape', ()))}")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    fingerprint = _fingerprint(train_ds.x, train_ds.y.long())
    key = _cache_key(name, fingerprint)
    weights, meta = root / f"{key}.safetensors", root / f"{key}.json"
    if not retrain:
        try:
            hit = _load_cached(weights, meta, train_ds, fingerprint, device)
        except ValueError as e:
            warnings.warn(f"domain classifier cache {meta} is unusable ({e}); retraining", RuntimeWarning,
                          stacklevel=2)
            hit = None
        if hit is not None:
            clf, info = hit
            info = dict(info, from_cache=True, cache_path=str(weights))
            return clf, info
    clf, info = train_domain_classifier(train_ds, epochs=epochs, seed=seed, device=device)
    info["dataset"] = _base_name(name)
    try:
        _save(weights, meta, clf, info)
    except OSError as e:
        warnings.warn(f"could not cache the domain classifier in {root}: {e}", RuntimeWarning, stacklevel=2)
    return clf, dict(info, from_cache=False, cache_path=str(weights))
