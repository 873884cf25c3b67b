"""The estimator's input: array layouts (vectors, images channels first or last) and the map of input values onto
the model's scale, fitted once on the training data and undone on sampling. :class:`~wae.estimator.GMWAEClustering`
and ``wae cluster`` validate with these rules.

Input values (``scaling="auto"``; the map is fitted once, stored with the model, and undone on :meth:`sample`):

* ``uint8`` data are divided by 255;
* values already in [0, 1] (and ``bool``) are kept;
* values in [0, 255] whose maximum exceeds 127 are taken as 8-bit intensities and divided by 255;
* other non-negative values up to 255 (e.g. sklearn's digits, 0–16) are divided by their maximum — these rules are
  those of ``npz:`` images (:func:`wae.data.custom.value_scale`) and apply to vectors too (an (N, 784) uint8 array
  is flattened images);
* any other range (negative values, or above 255) is standardised: images by one affine map of the whole array's
  [min, max] onto [0, 1] (the decoder's sigmoid output lives there), vectors per feature to mean 0 and standard
  deviation 1 (a constant feature only centred). ``scaling="standard"`` standardises vectors whatever their range
  (features in different units); ``"minmax"`` maps the whole array onto [0, 1].

Every rescaling is logged (logger ``wae``, level INFO) and kept in :attr:`GMWAEClustering.input_notes_`.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError
from ..networks import MIN_IMAGE_SIDE
from .custom import value_scale
from .source import Source

__all__ = [
    "LAYOUTS",
    "SCALINGS",
    "InputError",
    "check_image_size",
    "fit_scaling",
    "fit_source_scaling",
    "from_model_layout",
    "infer_layout",
    "is_identity",
    "mapped_input",
    "scaled_input",
    "scaling_rule",
    "source_total_variance",
    "to_model_layout",
]

LAYOUTS = ("auto", "nchw", "nhwc")
SCALINGS = ("auto", "minmax", "standard", "none")


class InputError(DataError, ValueError):
    """Bad input to the estimator: a :class:`~wae.errors.DataError` (one line, the CLI's exit code 2) that is also
    the ``ValueError`` scikit-learn's conventions ask for."""


def infer_layout(shape: tuple[int, ...], layout: str = "auto") -> str:
    """``"vector"``, ``"nhw"``, ``"nchw"`` or ``"nhwc"`` for an array of ``shape`` (N first).

    4-D arrays: channels first when dimension 1 is 1, 3 or 4 and dimension 3 is not, channels last in the mirror
    case; when both are (e.g. (N, 4, 4, 3)) the two spatial dimensions are taken to be the equal ones (square images),
    else channels first. ``layout`` ``"nchw"`` / ``"nhwc"`` forces a 4-D array's layout."""
    nd = len(shape)
    if layout not in LAYOUTS:
        raise InputError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if nd == 2:
        return "vector"
    if nd == 3:
        return "nhw"
    if nd != 4:
        raise InputError(f"X has {nd} dimensions (shape {tuple(shape)}); expected vectors (N, D) or images (N, H, W), "
                         "(N, C, H, W) or (N, H, W, C)")
    if layout != "auto":
        return layout
    first, last = shape[1] in (1, 3, 4), shape[3] in (1, 3, 4)
    if first and last:
        return "nhwc" if shape[1] == shape[2] and shape[2] != shape[3] else "nchw"
    if first:
        return "nchw"
    if last:
        return "nhwc"
    raise InputError(f"X has shape {tuple(shape)}: images need 1, 3 or 4 channels, first (N, C, H, W) or last "
                     "(N, H, W, C)")


def to_model_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """User layout → the model's (N, C, H, W) or (N, D)."""
    if layout == "nhw":
        return x[:, None]
    if layout == "nhwc":
        return x.transpose(0, 3, 1, 2)
    return x


def from_model_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """The model's (N, C, H, W) or (N, D) → the user's layout."""
    if layout == "nhw":
        return x[:, 0]
    if layout == "nhwc":
        return x.transpose(0, 2, 3, 1)
    return x


def check_image_size(shape: tuple[int, ...]) -> None:
    """Refuse images (C, H, W) with a side below :data:`~wae.networks.MIN_IMAGE_SIDE` (one line)."""
    if len(shape) == 3 and min(shape[1:]) < MIN_IMAGE_SIDE:
        raise InputError(f"images of {shape[1]}×{shape[2]} pixels are too small: each side must be at least "
                         f"{MIN_IMAGE_SIDE} pixels (reshape them to vectors, N×D, to cluster them as such)")


def fit_scaling(x: np.ndarray, is_image: bool, rule: str = "auto", raw_dtype=None
                ) -> tuple[np.ndarray, np.ndarray, str | None]:
    """``(offset, scale, note)`` of the map x → (x − offset) / scale (see the module doc for the ``auto`` rules);
    ``x`` in the model's layout, ``raw_dtype`` the dtype the user passed. ``offset``/``scale`` are float64 arrays
    broadcastable to one example; ``note`` says what was done, or is None when the data are kept as they are."""
    return scaling_rule(float(x.min()), float(x.max()), x.shape[1:], is_image, rule,
                        raw_dtype if raw_dtype is not None else x.dtype,
                        lambda: (x.mean(0, dtype=np.float64), x.std(0, dtype=np.float64)))


def scaling_rule(lo: float, hi: float, ex: tuple[int, ...], is_image: bool, rule: str, dtype, moments
                 ) -> tuple[np.ndarray, np.ndarray, str | None]:
    """:func:`fit_scaling` from the data's range [``lo``, ``hi``], one example's shape ``ex`` and ``moments()``
    → (per-feature mean, standard deviation), called only when standardising (data held in memory, or the
    statistics of a streaming pass over data on disk)."""
    if rule not in SCALINGS:
        raise InputError(f"scaling must be one of {SCALINGS}, got {rule!r}")
    one, zero = np.ones(ex), np.zeros(ex)
    if rule == "none":
        if is_image and (lo < 0 or hi > 1):
            raise InputError(f"scaling='none' needs images with values in [0, 1]; X has values in [{lo:g}, {hi:g}]")
        return zero, one, None
    if rule == "auto":
        found = value_scale(lo, hi, dtype)
        if found is not None:  # intensities (uint8, [0, 1], [0, 255]): images and vectors alike
            div, note = found
            return zero, one * div, note
        rule = "minmax" if is_image else "standard"
    if rule == "standard":
        if is_image:
            raise InputError("scaling='standard' is for vectors; images are mapped to [0, 1] ('auto' or 'minmax')")
        mean, std = moments()
        std = np.where(std > 1e-12 * max(1.0, float(np.abs(mean).max())), std, 1.0)
        return mean, std, f"values in [{lo:g}, {hi:g}]: each feature standardised (mean 0, std 1)"
    span = hi - lo if hi > lo else 1.0
    return one * lo, one * span, f"values in [{lo:g}, {hi:g}] mapped to [0, 1] by (x − {lo:g}) / {span:g}"


def scaled_input(arr: np.ndarray, layout: str, offset: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    """An array in the user's layout → the model's input: model layout, (x − offset) / scale, float32."""
    x = (to_model_layout(arr, layout) - offset) / scale
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def is_identity(offset: np.ndarray, scale: np.ndarray) -> bool:
    return not np.asarray(offset).any() and bool((np.asarray(scale) == 1).all())


def mapped_input(x: Source | torch.Tensor, offset: np.ndarray, scale: np.ndarray) -> Source | torch.Tensor:
    """A data set's examples (a :class:`Source` read lazily, or a tensor; the model's layout) under the input map."""
    offset, scale = np.asarray(offset, dtype=np.float64), np.asarray(scale, dtype=np.float64)
    if is_identity(offset, scale):
        return x
    if isinstance(x, Source):
        return x.mapped(offset, scale)
    return torch.from_numpy(np.ascontiguousarray((x.numpy() - offset) / scale, dtype=np.float32))


def fit_source_scaling(src: Source, shape: tuple[int, ...], rule: str, name: str
                       ) -> tuple[np.ndarray, np.ndarray, str | None]:
    """:func:`fit_scaling` of data streamed from disk (examples of ``shape``, model layout), from one streaming pass
    (:meth:`Source.stats`); none for images the loader already put in [0, 1] (``auto``/``none``)."""
    is_image = len(shape) == 3
    if is_image and rule in ("auto", "none") and src.offset is None:
        return np.zeros(shape), np.ones(shape), None
    st = src.stats()
    if not st["finite"]:
        raise InputError(f"{name} contains NaN or infinite values")
    std = np.sqrt(st["m2"] / st["n"]).reshape(shape)
    return scaling_rule(st["min"], st["max"], shape, is_image, rule, np.float32,
                        lambda: (st["mean"].reshape(shape), std))


def source_total_variance(src: Source, scale: np.ndarray) -> float:
    """Σ_j Var(x_j) of streamed data after the input map (unbiased, as for data in memory)."""
    st = src.stats()
    return float((st["m2"] / max(1, st["n"] - 1) / np.asarray(scale, dtype=np.float64).reshape(-1) ** 2).sum())
