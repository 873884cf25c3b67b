"""Cluster your own data: :class:`GMWAEClustering`, a GM-WAE as a scikit-learn estimator.

>>> from wae import GMWAEClustering                                # doctest: +SKIP
>>> est = GMWAEClustering(n_clusters=10, random_state=0).fit(X)    # doctest: +SKIP
>>> est.labels_, est.predict_proba(X), est.sample(16, cluster=3)   # doctest: +SKIP

``X`` is an array of images — ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` with 1, 3 or 4 channels and sides
of at least :data:`~wae.networks.MIN_IMAGE_SIDE` pixels — or of vectors ``(N, D)``.

Input values are mapped onto the model's scale (``scaling``; the rules: :mod:`wae.data.inputs`); the map is stored
with the model, undone on :meth:`GMWAEClustering.sample`, logged (logger ``wae``, INFO) and kept in ``input_notes_``.

Settings come from a preset, by data kind: 28×28 images get the main job's (``main``); other images ``cluster-image``
(conv nets sized to the image); vectors ``cluster-vector`` (MLPs), scaled to the data
(:func:`wae.presets.cluster_run_config`). The invariance term (``model.consistency``) compares q(k|x) with q(k|T(x)),
T a small random warp for images, noise, feature dropout and SCARF's resampling for vectors.

``score(X)`` is the opposite of the GM-WAE objective (Eq. 4 of Gaujac et al.) on X: label-free, higher is better.
It cannot compare different K — the prior, the latent size and ``cost_scale`` change with ``n_clusters`` — so
``wae cluster`` chooses K by the held-out silhouette (:func:`wae.cluster.sweep_criterion`).
"""
from __future__ import annotations

import logging
import math
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import yaml
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._version import __version__
from .data import Dataset, inputs
from .data.inputs import LAYOUTS, SCALINGS, InputError, check_image_size, fit_scaling, infer_layout
from .data.source import Source, apply_batched, batches
from .data.splits import RunData
from .errors import WAEError
from .files import atomic_write_text, atomic_write_with
from .presets import accelerator_setting, cluster_preset, cluster_run_config, load_run_config
from .runtime import kept_global_rng, quiet_lightning
from .serialization import load_model, save_model
from .training.restarts import starts_report
from .training.run import fit_in_memory

__all__ = ["GMWAEClustering", "InputError", "fit_scaling", "infer_layout"]

log = logging.getLogger("wae")

INVARIANCES = ("auto", "off")
_ESTIMATOR_FILE, _ARRAYS_FILE = "estimator.yaml", "estimator.safetensors"
_BATCH = 1024
"""Examples per batch of inference; a NumPy array (a memory map included) is validated and scaled batch by batch."""


class GMWAEClustering(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """Clustering with a Gaussian-mixture Wasserstein auto-encoder (GM-WAE) that can also draw each cluster.

    Parameters
    ----------
    n_clusters : int, default 10
        K, the number of mixture components (clusters).
    preset : str or None
        A ``gm-wae`` preset (``wae presets``); None picks one from the data's shape (see the module doc).
    max_steps, max_minutes : int / float or None
        Training budget (optimiser steps / wall minutes); None keeps the preset's (every preset has a clock:
        ``main`` 8.5 minutes, ``cluster-*`` 5). ``max_steps`` bounds the kept run (its start's steps and those after
        them); the discarded starts' steps come on top, their time counts in ``max_minutes``. With ``max_steps`` the
        heads' pre-training runs min(the preset's, max_steps // 5) steps.
    invariance : ``"auto"`` or ``"off"``
        ``auto`` keeps the preset's cluster-consistency term (warps for images, noise and feature dropout for
        vectors); ``off`` drops it.
    scaling : ``"auto"``, ``"minmax"``, ``"standard"`` (vectors) or ``"none"``
        How input values are mapped for the model (see the module doc); undone on :meth:`sample`.
    layout : ``"auto"``, ``"nchw"`` or ``"nhwc"``
        The layout of 4-D image arrays (``auto``: see :func:`infer_layout`).
    overrides : list of str or None
        Any run-config key as ``key=value`` (e.g. ``["model.width=0.25", "train.lr=5e-4"]``), applied last.
    random_state : int, RandomState or None
        Seeds the fit (network initialisation, batches, sampling in training). On a CPU an int makes a fit
        reproducible only when it ends on ``max_steps``: when the clock (``max_minutes``, set by every preset) stops
        it first, a rerun stops at another step (``clock_stopped_`` says whether it did, with a warning).
    device : str, default ``"auto"``
        ``auto``, ``cpu``, ``cuda``, ``cuda:i`` or ``mps`` for training; inference runs there too (CUDA) or on the CPU.
    verbose : bool
        Progress lines for the restart candidates (which start, its steps, the time elapsed), a progress bar for
        the kept run, and the input notes printed. False prints nothing.

    Attributes
    ----------
    labels_ : ndarray (N,) of the training data's clusters · ``n_iter_`` : every optimiser step taken (all
    restart candidates', the discarded ones' included) · ``n_iter_kept_`` : the kept run's (its start's and those
    after it) · ``clock_stopped_`` : whether ``max_minutes`` ended the fit before ``max_steps`` · ``starts_`` : the
    label-free choice among the restart candidates (:func:`~wae.training.restarts.starts_report`; None without) ·
    ``teacher_`` : what ``train.teacher`` gave the fit, in words (None without) · ``model_`` : the trained
    :class:`~wae.models.gmwae.GaussianMixtureAE` · ``run_config_`` : its :class:`~wae.config.RunConfig` ·
    ``input_shape_`` / ``layout_`` : one example's shape and layout as given · ``offset_`` / ``scale_`` : the input
    map · ``input_notes_`` : what was done to the values · ``n_features_in_`` (and ``feature_names_in_``).
    """

    def __init__(self, n_clusters=10, *, preset=None, max_steps=None, max_minutes=None, invariance="auto",
                 scaling="auto", layout="auto", overrides=None, random_state=None, device="auto", verbose=False):
        self.n_clusters = n_clusters
        self.preset = preset
        self.max_steps = max_steps
        self.max_minutes = max_minutes
        self.invariance = invariance
        self.scaling = scaling
        self.layout = layout
        self.overrides = overrides
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # --- scikit-learn plumbing ------------------------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def __sklearn_is_fitted__(self) -> bool:  # model_ is set last in fit: a failed fit leaves it unfitted
        return hasattr(self, "model_")

    @property
    def _n_features_out(self) -> int:
        return int(self.model_.config.latent_dim)

    def _check_params(self) -> None:
        K = self.n_clusters
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
            raise InputError(f"n_clusters must be a positive integer, got {K!r}")
        v = self.max_steps
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise InputError(f"max_steps must be a positive integer or None, got {v!r}")
        v = self.max_minutes
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not v > 0
                              or not math.isfinite(v)):
            raise InputError(f"max_minutes must be a positive number or None, got {v!r}")
        if self.invariance not in INVARIANCES:
            raise InputError(f"invariance must be one of {INVARIANCES}, got {self.invariance!r}")
        if self.scaling not in SCALINGS:
            raise InputError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if self.layout not in LAYOUTS:
            raise InputError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.overrides is not None and (isinstance(self.overrides, str) or
                                           not all(isinstance(s, str) for s in self.overrides)):
            raise InputError(f"overrides must be a list of 'key=value' strings, got {self.overrides!r}")
        accelerator_setting(self.device)

    def _validate(self, X, reset: bool) -> np.ndarray:
        """X → a float32/float64 array in the user's layout (validate_data: finite, numeric, n_features_in_)."""
        try:
            arr = validate_data(self, X, reset=reset, allow_nd=True, dtype=[np.float32, np.float64],
                                ensure_min_samples=2 if reset else 1, ensure_all_finite=True)
        except InputError:
            raise
        except ValueError as e:  # one line for the command line; still a ValueError for scikit-learn
            lines = [s.strip() for s in str(e).strip().splitlines() if s.strip()] or [type(e).__name__]
            hint = [s for s in lines[1:] if s.startswith("Reshape your data")]  # the fix, without the array's repr
            raise InputError(" ".join(lines[:1] + hint)) from None
        if not reset and tuple(arr.shape[1:]) != tuple(self.input_shape_):
            raise InputError(f"X has examples of shape {tuple(arr.shape[1:])}; this {type(self).__name__} was fitted "
                             f"on {tuple(self.input_shape_)}")
        return arr

    def _model_x(self, X) -> torch.Tensor:
        """A validated array in the user's layout → the model's input (scaled, float32); a :class:`Dataset` (its
        examples in the model's layout, streamed ones read whole: keep it small) → the same."""
        if isinstance(X, Dataset):
            return torch.cat(list(self._batches(X))) if len(X) else torch.empty(0, *self.model_.data_shape)
        return inputs.scaled_input(X, self.layout_, self.offset_, self.scale_)

    def _dataset_input(self, ds: Dataset) -> Source | torch.Tensor:
        """The model's input of a :class:`Dataset` (values as its loader gives them, the model's layout): its
        source mapped by the input map (read lazily), or its tensor mapped."""
        if tuple(ds.shape) != tuple(self.model_.data_shape):
            raise InputError(f"{ds.name} has examples of shape {tuple(ds.shape)}; this {type(self).__name__} was "
                             f"fitted on {tuple(self.model_.data_shape)}")
        return inputs.mapped_input(ds.x, self.offset_, self.scale_)

    def _batches(self, X, device: torch.device | None = None):
        """The model's input of X in batches of :data:`_BATCH` examples, in order: a NumPy array (a memory map
        included) validated and scaled batch by batch, a :class:`Dataset` read batch by batch (streamed ones in
        DataLoader workers), anything else (lists, DataFrames) validated whole first."""
        if isinstance(X, Dataset):
            yield from batches(self._dataset_input(X), _BATCH, device=device)
            return
        per_batch = isinstance(X, np.ndarray) and X.ndim >= 2 and X.shape[0] >= 1  # (an empty one: refused whole)
        arr = X if per_batch else self._validate(X, reset=False)
        for i in range(0, arr.shape[0], _BATCH):
            x = self._model_x(self._validate(arr[i: i + _BATCH], reset=False) if per_batch else arr[i: i + _BATCH])
            yield x if device is None else x.to(device)

    def _inference_device(self) -> torch.device:
        acc, devices = accelerator_setting(self.device)
        if acc == "gpu" or (acc == "auto" and torch.cuda.is_available()):
            return torch.device(f"cuda:{int(devices.rstrip(','))}" if devices.endswith(",") else "cuda")
        return torch.device("cpu")

    @contextmanager
    def _on_device(self):
        """The model on the inference device, in eval mode, without gradients; back on the CPU after."""
        model, dev = self.model_, self._inference_device()
        model.eval()
        with torch.no_grad():
            model.to(dev)  # a no-op on the CPU
            try:
                yield model, dev
            finally:
                model.cpu()

    def _apply(self, fn, x: torch.Tensor) -> torch.Tensor:
        """``fn`` over batches of x (the model's input, in memory) on the inference device; a CPU tensor."""
        with self._on_device() as (_, dev):
            return apply_batched(lambda b: fn(b).float(), x, _BATCH, dev)

    def _chunks(self, fn, X):
        """``fn`` of each batch of X's model input (:meth:`_batches`) on the inference device: CPU tensors."""
        with self._on_device() as (_, dev):
            for xb in self._batches(X, device=dev):
                yield fn(xb).float().cpu()

    # --- fitting --------------------------------------------------------------------------------------------------
    def run_config(self, shape: tuple[int, ...], n: int, seed: int = 0, total_variance: float | None = None):
        """The :class:`~wae.config.RunConfig` a fit on ``n`` examples of per-example ``shape`` (model layout) and
        ``total_variance`` Σ_j Var(x_j) (after the input map; default: MNIST's per pixel × the size) uses."""
        return cluster_run_config(shape, n, self.n_clusters, preset=self.preset, seed=seed,
                                  total_variance=total_variance, invariance=self.invariance, device=self.device,
                                  max_steps=self.max_steps, max_minutes=self.max_minutes, overrides=self.overrides,
                                  who=type(self).__name__)

    def fit(self, X, y=None):
        """Train on X (labels ``y`` are ignored: the clustering is unsupervised). Returns self.

        X may also be a :class:`~wae.data.Dataset` (``wae.data.load_dataset``), whose examples are in the model's
        layout and valued as its loader values them; one streamed from disk is read in batches, never whole (its
        input map comes from a streaming pass when the values need one)."""
        if isinstance(X, Dataset):
            return self._fit_dataset(X)
        self._check_params()
        raw_dtype = getattr(X, "dtype", None)
        arr = self._validate(X, reset=True)
        n = arr.shape[0]
        if n < self.n_clusters:
            raise InputError(f"X has {n} sample{'s' if n != 1 else ''}, fewer than n_clusters={self.n_clusters}")
        layout = infer_layout(arr.shape, self.layout)
        x = inputs.to_model_layout(arr, layout)
        shape = tuple(int(s) for s in x.shape[1:])
        check_image_size(shape)
        offset, scale, note = fit_scaling(x, len(shape) == 3, self.scaling, raw_dtype)
        xt = inputs.scaled_input(arr, layout, offset, scale)
        model, cfg, steps, notes = self._train(xt, shape, n, note, float(xt.flatten(1).double().var(0).sum()))
        # the fitted attributes, all at once: a fit that fails leaves none behind (the estimator stays unfitted)
        self._set_fitted(layout, tuple(int(s) for s in arr.shape[1:]), offset, scale, notes, model, cfg, steps)
        self.labels_ = self._apply(model.cluster_probs, xt).argmax(1).numpy().astype(np.int64)
        return self

    def _fit_dataset(self, ds: Dataset, labels: bool = True):
        """:meth:`fit` on a :class:`Dataset` (``labels``: compute :attr:`labels_`, a pass over the data)."""
        if not ds.streamed:  # in memory: as an array (in the model's layout)
            return self.fit(ds.x.numpy())
        self._check_params()
        n, shape = len(ds), tuple(ds.shape)
        if n < max(2, self.n_clusters):
            raise InputError(f"{ds.name} has {n} examples, fewer than n_clusters={self.n_clusters}")
        check_image_size(shape)
        preset = self.preset or cluster_preset(shape)
        offset, scale, note = inputs.fit_source_scaling(ds.x, shape, self.scaling, ds.name)
        tv = inputs.source_total_variance(ds.x, scale) if preset.startswith("cluster-") else None
        model, cfg, steps, notes = self._train(inputs.mapped_input(ds.x, offset, scale), shape, n, note, tv)
        self._set_fitted("nchw" if len(shape) == 3 else "vector", shape, offset, scale, notes, model, cfg, steps)
        self.n_features_in_ = int(shape[0])
        if labels:
            self.labels_ = np.concatenate([p.argmax(1).numpy() for p in self._chunks(model.cluster_probs, ds)]
                                          ).astype(np.int64)
        return self

    def _train(self, xt, shape: tuple[int, ...], n: int, note: str | None, total_variance: float | None):
        """Say the input ``note``, then train on ``xt`` (the model's input: a tensor or a mapped source) with the
        run config of :meth:`run_config`; ``(model, cfg, steps, notes)``."""
        notes = [note] if note else []
        for msg in notes:
            log.info("GMWAEClustering: %s", msg)
            if self.verbose:
                print(f"note: {msg}")
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1)) \
            if not isinstance(self.random_state, (int, np.integer)) else int(self.random_state)
        cfg = self.run_config(shape, n, seed, total_variance)
        with kept_global_rng(), warnings.catch_warnings():
            quiet_lightning()
            model, steps = fit_in_memory(cfg, RunData(Dataset("array", xt, None), None, None), quiet=not self.verbose)
        if steps.clock_stopped:
            warnings.warn(f"{type(self).__name__}: {steps.note(cfg.train)}", stacklevel=3)
        return model, cfg, steps, notes

    def _set_fitted(self, layout, shape, offset, scale, notes, model, cfg, steps) -> None:
        self.layout_, self.input_shape_ = layout, shape
        self.offset_, self.scale_, self.input_notes_ = offset, scale, notes
        self.model_, self.run_config_ = model, cfg
        self.n_iter_, self.n_iter_kept_, self.clock_stopped_ = steps.total, steps.kept, steps.clock_stopped
        self.starts_ = starts_report(cfg, steps.starts)
        self.teacher_ = steps.teacher

    # --- inference ------------------------------------------------------------------------------------------------
    def predict_proba(self, X) -> np.ndarray:
        """q(k | x): (N, n_clusters), rows summing to 1 (computed in batches)."""
        check_is_fitted(self)
        return np.concatenate(list(self.proba_chunks(X)))

    def proba_chunks(self, X):
        """q(k | x) batch by batch, in order (float64 arrays, rows summing to 1): :meth:`predict_proba` without
        holding all of it, for data too large for that (a memory map, a :class:`~wae.data.Dataset` streamed from
        disk)."""
        check_is_fitted(self)
        for p in self._chunks(self.model_.cluster_probs, X):
            p = p.double()
            yield (p / p.sum(1, keepdim=True)).numpy()

    def predict(self, X) -> np.ndarray:
        """The most likely cluster argmax_k q(k | x) of each example (int64), computed in batches."""
        check_is_fitted(self)
        return np.concatenate([p.argmax(1).numpy() for p in self._chunks(self.model_.cluster_probs, X)]
                              ).astype(np.int64)

    def transform(self, X) -> np.ndarray:
        """Codes: the mean of q(z | k*, x) for the most likely cluster k* (N, latent_dim), in X's float dtype."""
        check_is_fitted(self)
        if not isinstance(X, (np.ndarray, Dataset)):
            X = self._validate(X, reset=False)  # lists, DataFrames: their float dtype decides the codes'
        z = np.concatenate([c.numpy() for c in self._chunks(self.model_.encode, X)])
        return z.astype(np.float64 if getattr(X, "dtype", None) == np.float64 else np.float32)

    def score(self, X, y=None) -> float:
        """The opposite of the GM-WAE objective (Eq. 4) on X — higher is better, labels ignored (module doc).

        Comparable only between fits of the same objective (the same ``n_clusters``, preset and overrides: seeds,
        budgets): not across ``n_clusters``, whose prior, latent size and cost scale differ — K is chosen by the
        held-out silhouette (:func:`wae.cluster.sweep_criterion`), not by this."""
        check_is_fitted(self)
        x = self._dataset_input(X) if isinstance(X, Dataset) else self._model_x(self._validate(X, reset=False))
        n = x.shape[0]
        if n < 2:
            raise InputError("score needs at least 2 samples (the MMD compares pairs)")
        model, total = self.model_, 0.0
        model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for idx in np.array_split(np.arange(n), max(1, n // 256)):
                total += float(model.objective(x[idx[0]: idx[-1] + 1]).paper) * len(idx)
        return -total / n

    def sample(self, n: int = 1, cluster: int | None = None, random_state=None) -> np.ndarray:
        """``n`` draws from the model — from cluster ``cluster`` alone when given — shaped and valued like X
        (the user's layout, the input map undone), float32. The codes come from ``model_.sample_codes`` (the
        refitted components when the preset has ``component_refit``), the path ``wae sample`` and the report's
        gallery take: with the same seed they draw the same samples."""
        check_is_fitted(self)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"n must be a positive integer, got {n!r}")
        K = self.model_.num_components
        if cluster is not None and (isinstance(cluster, bool) or not isinstance(cluster, (int, np.integer))
                                    or not 0 <= cluster < K):
            raise InputError(f"cluster must be an integer from 0 to {K - 1}, got {cluster!r}")
        seed = int(check_random_state(random_state).randint(0, 2**31 - 1)) \
            if not isinstance(random_state, (int, np.integer)) else int(random_state)
        g = torch.Generator().manual_seed(seed)
        model = self.model_.eval()
        with torch.no_grad():  # the model's own sampling path (refitted components with component_refit)
            z = model.sample_codes(int(n), None if cluster is None else int(cluster), generator=g)
            out = self._apply(model.decode, z).double().numpy()
        out = out * self.scale_ + self.offset_
        return np.ascontiguousarray(inputs.from_model_layout(out, self.layout_), dtype=np.float32)

    # --- save / load ----------------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the fitted estimator into directory ``path``: ``model.safetensors`` + ``model.yaml`` (the model, as
        ``wae.load`` reads it), ``config.yaml`` (its run config), ``estimator.yaml`` (parameters, input layout,
        notes) and ``estimator.safetensors`` (the input map and ``labels_``). Nothing is pickled."""
        check_is_fitted(self)
        from safetensors.torch import save_file

        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WAEError(f"cannot write to {path}: {e.strerror or e}") from None
        save_model(self.model_, path, self.run_config_)
        atomic_write_text(path / "config.yaml", self.run_config_.to_yaml())
        arrays = {"offset": torch.from_numpy(np.asarray(self.offset_, dtype=np.float64)).contiguous(),
                  "scale": torch.from_numpy(np.asarray(self.scale_, dtype=np.float64)).contiguous(),
                  "labels": torch.from_numpy(np.asarray(self.labels_, dtype=np.int64)).contiguous()}
        atomic_write_with(path / _ARRAYS_FILE, lambda tmp: save_file(arrays, tmp))
        params = self.get_params(deep=False)
        params["overrides"] = list(params["overrides"]) if params["overrides"] is not None else None
        if not isinstance(params["random_state"], (int, type(None))):
            params["random_state"] = None  # a RandomState object is not data; the fit's seed is in config.yaml
        meta = {"estimator": type(self).__name__, "wae_version": __version__, "params": params,
                "input_shape": list(self.input_shape_), "layout": self.layout_, "n_iter": int(self.n_iter_),
                "n_iter_kept": int(self.n_iter_kept_), "clock_stopped": bool(self.clock_stopped_),
                "starts": self.starts_, "teacher": self.teacher_, "n_features_in": int(self.n_features_in_),
                "input_notes": list(self.input_notes_), "feature_names_in": [str(f) for f in self.feature_names_in_]
                if hasattr(self, "feature_names_in_") else None}
        atomic_write_text(path / _ESTIMATOR_FILE, yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))
        return path

    @classmethod
    def load(cls, path) -> "GMWAEClustering":
        """A fitted estimator from a directory written by :meth:`save` (safetensors + YAML; nothing unpickled)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        meta_path, arr_path = path / _ESTIMATOR_FILE, path / _ARRAYS_FILE
        for p in (meta_path, arr_path):
            if not p.is_file():
                raise WAEError(f"{p} is missing: is {path} a directory written by {cls.__name__}.save?")
        try:
            meta = yaml.safe_load(meta_path.read_text())
            params, shape, layout = dict(meta["params"]), tuple(int(s) for s in meta["input_shape"]), meta["layout"]
            n_iter, n_features, notes = int(meta["n_iter"]), int(meta["n_features_in"]), list(meta["input_notes"])
            n_kept, clock = int(meta.get("n_iter_kept", n_iter)), bool(meta.get("clock_stopped", False))
            names = meta.get("feature_names_in")
        except (yaml.YAMLError, KeyError, TypeError, ValueError, OSError) as e:
            raise WAEError(f"{meta_path} is corrupt ({type(e).__name__})") from None
        unknown = set(params) - set(cls().get_params(deep=False))
        if unknown:
            raise WAEError(f"{meta_path}: unknown parameter(s) {sorted(unknown)}")
        try:
            arrays = load_file(str(arr_path))
        except (SafetensorError, OSError, ValueError) as e:
            raise WAEError(f"{arr_path} is corrupt or unreadable ({e})") from None
        est = cls(**params)
        est.model_ = load_model(path)
        est.run_config_ = load_run_config(path / "config.yaml")
        est.offset_, est.scale_ = arrays["offset"].numpy(), arrays["scale"].numpy()
        est.labels_ = arrays["labels"].numpy()
        est.layout_, est.input_shape_, est.n_iter_, est.n_features_in_ = layout, shape, n_iter, n_features
        est.n_iter_kept_, est.clock_stopped_, est.input_notes_ = n_kept, clock, notes
        est.starts_, est.teacher_ = meta.get("starts"), meta.get("teacher")
        if names is not None:
            est.feature_names_in_ = np.asarray(names, dtype=object)
        if tuple(est.model_.data_shape) != tuple(inputs.to_model_layout(np.empty((1, *shape)), layout).shape[1:]):
            raise WAEError(f"{path}: the model's data shape {est.model_.data_shape} does not match the input shape "
                           f"{shape} in {meta_path.name}")
        return est
