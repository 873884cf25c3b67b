"""Data that stay on disk: a :class:`Source` reads examples by index, for data sets too large to hold in memory.

A source stands where a data set's float32 tensor ``x`` would (:class:`~wae.data.core.Dataset` takes either):
``len(x)``, ``x.shape``, ``x.dim()``, ``x[i:j]`` and ``x[idx]`` work and give float32 CPU tensors, reading only the
rows asked for. Training reads raw rows instead (:meth:`Source.read`: uint8 for 8-bit images, a quarter of the bytes
of float32), in DataLoader workers (:meth:`Source.rows`), and turns them into float32 on the training device
(:meth:`Source.decode`). Views (:meth:`Source.take`: the validation carve, a subset; :meth:`Source.mapped`: an
affine map of the values) share the reader and read nothing until asked.

Readers: :class:`ArrayReader` (the rows of an uncompressed array in a file, ``.npy`` or an npz member stored
without compression, read with positioned reads: nothing is mapped into the process, so the file's pages never count
in its resident memory or its address space) and :class:`~wae.data._images.ImageReader` (image files decoded and
resized when read).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch

from ..errors import DataError

__all__ = ["Source", "Reader", "ArrayReader", "SourceRows", "as_batch", "batches", "available_cpus"]

STATS_CHUNK_BYTES = 32 * 2 ** 20
"""Bytes of raw rows per chunk of a streaming pass (:meth:`Source.stats`)."""


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the system shows it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class Reader(Protocol):
    """Rows of a data set in storage: ``n`` rows of ``example_shape`` (the model's layout, C×H×W or D)."""

    n: int
    example_shape: tuple[int, ...]
    bytes_read: int
    workers: int
    """DataLoader workers that pay off when reading it (0: read in the main process)."""

    def read(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (sorted, distinct int64) as one array ``len(idx)×example_shape`` (uint8, or float32)."""

    def describe(self) -> str:
        """Where the rows are, for messages."""


class ArrayReader:
    """The rows of a C-ordered array of ``shape`` and ``dtype`` stored uncompressed at byte ``offset`` of ``path``.

    ``layout``: ``vector`` (N×D), ``nhw`` (N×H×W, one channel), ``nchw``, or ``nhwc`` (turned to C×H×W per read).
    Rows come back as uint8 (uint8 and bool data) or float32. Each process opens the file itself (DataLoader workers
    included) and reads runs of consecutive rows with one call each; :attr:`bytes_read` counts what it read."""

    workers = 0

    def __init__(self, path: str | os.PathLike, offset: int, dtype, shape: tuple[int, ...], layout: str):
        self.path, self.offset, self.dtype = Path(path), int(offset), np.dtype(dtype)
        self.stored = tuple(int(s) for s in shape)
        self.layout = layout
        self.n = self.stored[0]
        self.row_items = math.prod(self.stored[1:])
        self.row_bytes = self.row_items * self.dtype.itemsize
        rest = self.stored[1:]
        if layout == "nhw":
            self.example_shape = (1, *rest)
        elif layout == "nhwc":
            self.example_shape = (rest[2], rest[0], rest[1])
        else:
            self.example_shape = rest
        self.bytes_read = 0
        self._fh = None
        self._pid = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fh"], state["_pid"] = None, None
        return state

    def _file(self):
        if self._fh is None or self._pid != os.getpid():  # a forked worker opens its own (no shared offset)
            try:
                self._fh = open(self.path, "rb", buffering=0)
            except OSError as e:
                raise DataError(f"{self.path}: cannot open ({e.strerror or e})") from None
            self._pid = os.getpid()
        return self._fh

    def read(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), self.row_items), dtype=self.dtype)
        if len(idx):
            f = self._file()
            view = memoryview(out.reshape(-1).view(np.uint8))
            cuts = np.flatnonzero(np.diff(idx) != 1) + 1
            for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(idx)]])):
                want = (b - a) * self.row_bytes
                f.seek(self.offset + int(idx[a]) * self.row_bytes)
                got = f.readinto(view[a * self.row_bytes: b * self.row_bytes])
                if got != want:
                    raise DataError(f"{self.path}: the file ended early (rows {idx[a]}…{idx[b - 1]}); it is "
                                    "truncated or was changed while being read")
                self.bytes_read += got
        rows = out.reshape(len(idx), *self.stored[1:])
        if self.layout == "nhw":
            rows = rows[:, None]
        elif self.layout == "nhwc":
            rows = rows.transpose(0, 3, 1, 2)
        if self.dtype == np.bool_:
            return np.ascontiguousarray(rows, dtype=np.uint8)
        if self.dtype == np.uint8:
            return np.ascontiguousarray(rows)
        return np.ascontiguousarray(rows, dtype=np.float32)

    def describe(self) -> str:
        return str(self.path)


def _positions(key, n: int) -> np.ndarray:
    """Row positions (int64) of an int, a slice, or a 1-D integer array/tensor/list ``key`` into ``n`` rows."""
    if isinstance(key, slice):
        return np.arange(*key.indices(n), dtype=np.int64)
    if isinstance(key, torch.Tensor):
        key = key.detach().cpu().numpy()
    pos = np.asarray(key)
    if pos.dtype == np.bool_:
        raise TypeError("a Source is indexed by positions, not by a mask")
    if pos.ndim > 1 or not (np.issubdtype(pos.dtype, np.integer) or pos.size == 0):
        raise TypeError(f"a Source is indexed by an int, a slice or a 1-D array of ints, got {type(key).__name__}")
    pos = pos.astype(np.int64).reshape(-1)
    pos = np.where(pos < 0, pos + n, pos)
    if pos.size and (pos.min() < 0 or pos.max() >= n):
        raise IndexError(f"index out of range for {n} examples")
    return pos


class Source:
    """Examples read from a :class:`Reader` on demand (see the module doc).

    ``div``: raw values are divided by it (255 for 8-bit images: the [0, 1] of an in-memory data set); ``index``:
    the reader's rows this source holds, in order (None: all); ``offset``/``scale``: an affine map applied after
    (``(x − offset) / scale``, per feature, in float64 as :mod:`wae.estimator` maps in-memory data)."""

    def __init__(self, reader: Reader, div: float = 1.0, index: np.ndarray | None = None,
                 offset: np.ndarray | None = None, scale: np.ndarray | None = None):
        self.reader, self.div, self.index = reader, float(div), index
        self.offset, self.scale = offset, scale
        self._stats: dict | None = None

    # --- what a tensor would say ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.reader.n if self.index is None else int(len(self.index))

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.reader.example_shape))

    def dim(self) -> int:
        return 1 + len(self.reader.example_shape)

    @property
    def ndim(self) -> int:
        return self.dim()

    dtype = torch.float32
    device = torch.device("cpu")

    def __repr__(self) -> str:
        return f"Source({self.reader.describe()}, n={len(self)}, shape={tuple(self.reader.example_shape)})"

    def describe(self) -> str:
        return self.reader.describe()

    @property
    def bytes_read(self) -> int:
        """Bytes this process has read from the reader's storage (all views of it together)."""
        return self.reader.bytes_read

    @property
    def workers(self) -> int:
        """DataLoader workers that pay off for this source (image decoding: yes; array rows: no)."""
        return self.reader.workers

    # --- reading ------------------------------------------------------------------------------------------------
    def _base_rows(self, pos: np.ndarray) -> np.ndarray:
        return pos if self.index is None else self.index[pos]

    def read(self, key) -> torch.Tensor:
        """Raw rows ``key`` (positions in this source) in the order given: uint8 or float32, the model's layout."""
        rows = self._base_rows(_positions(key, len(self)))
        if rows.size == 0 or np.all(np.diff(rows) > 0):
            out = self.reader.read(rows)
        else:
            uniq, inverse = np.unique(rows, return_inverse=True)
            out = self.reader.read(uniq)[inverse]
        t = torch.from_numpy(np.ascontiguousarray(out))
        # the strides of a fresh tensor: NumPy may give a size-1 axis (one channel) any stride, and a tensor whose
        # strides also read as channels-last gets other convolution kernels (results differing in the last bit)
        return t.reshape(-1).view(t.shape)

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw rows (on any device) → float32 values: ``raw / div``, then the affine map when there is one."""
        x = raw.to(torch.float32)
        if self.div != 1.0:
            x = x.div(self.div)
        if self.offset is not None:
            dt = torch.float32 if x.device.type == "mps" else torch.float64
            off = torch.as_tensor(self.offset, dtype=dt, device=x.device)
            sc = torch.as_tensor(self.scale, dtype=dt, device=x.device)
            x = x.to(dt).sub(off).div(sc).to(torch.float32)
        return x

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return self.decode(self.read([int(key)]))[0]
        return self.decode(self.read(key))

    def materialize(self) -> torch.Tensor:
        """All rows as one float32 tensor (for data that fit in memory: a bounded sample)."""
        return self[:]

    # --- views --------------------------------------------------------------------------------------------------
    def take(self, key) -> "Source":
        """The rows ``key`` (positions in this source), read nothing until asked."""
        return Source(self.reader, self.div, self._base_rows(_positions(key, len(self))), self.offset, self.scale)

    def mapped(self, offset: np.ndarray, scale: np.ndarray) -> "Source":
        """The same rows, their values mapped by ``(x − offset) / scale`` (after this source's own map)."""
        offset, scale = np.asarray(offset, dtype=np.float64), np.asarray(scale, dtype=np.float64)
        if self.offset is not None:  # (x − o1)/s1 − o2)/s2 = (x − (o1 + o2·s1)) / (s1·s2)
            offset, scale = self.offset + offset * self.scale, self.scale * scale
        return Source(self.reader, self.div, self.index, offset, scale)

    def rows(self) -> "SourceRows":
        """This source as a ``torch.utils.data.Dataset`` of (index, raw row) for a DataLoader (see
        :class:`SourceRows`)."""
        return SourceRows(self)

    # --- a streaming pass ---------------------------------------------------------------------------------------
    def stats(self) -> dict:
        """One pass over every row in chunks (memory: one chunk): ``n`` rows, ``finite`` (no NaN or infinity),
        ``min``, ``max``, and per feature (float64) ``mean`` and ``m2`` (the sum of squared deviations from the mean,
        chunks merged as Chan et al. do) of the values this source gives. Cached."""
        if self._stats is None:
            n, d = len(self), math.prod(self.reader.example_shape)
            chunk = max(1, STATS_CHUNK_BYTES // max(1, d * 8))
            count, mean, m2 = 0, np.zeros(d), np.zeros(d)
            lo, hi, finite = math.inf, -math.inf, True
            for i in range(0, n, chunk):
                x = self[i: i + chunk].flatten(1).double().numpy()
                if not np.isfinite(x).all():
                    finite = False
                    break
                lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
                k, cm = len(x), x.mean(0)
                cm2 = np.einsum("ij,ij->j", x - cm, x - cm)
                delta, total = cm - mean, count + k
                mean = mean + delta * (k / total)
                m2 = m2 + cm2 + delta * delta * (count * k / total)
                count = total
            self._stats = {"n": n, "finite": finite, "min": lo, "max": hi, "mean": mean, "m2": m2}
        return self._stats


def as_batch(batch):
    """The DataLoader ``collate_fn`` of :class:`SourceRows`: its batches come whole from ``__getitems__``."""
    return batch


class SourceRows(torch.utils.data.Dataset):
    """A :class:`Source` for a DataLoader: ``__getitems__(indices)`` reads a whole batch at once and gives
    ``(indices as int64, raw rows)`` (use ``collate_fn=as_batch``); the raw rows become float32 on the device
    (:meth:`Source.decode`)."""

    def __init__(self, source: Source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        return torch.tensor(int(i)), self.source.read([int(i)])[0]

    def __getitems__(self, indices):
        return torch.as_tensor(list(indices), dtype=torch.int64), self.source.read(list(indices))


def batches(x, batch_size: int, workers: int | None = None, device: torch.device | str | None = None
            ) -> Iterator[torch.Tensor]:
    """``x[i:i + batch_size]`` for i = 0, batch_size, …, as float32 tensors (on ``device`` when given): for a
    :class:`Source` read in DataLoader workers (``workers``; default :attr:`Source.workers`) and decoded on the
    device; for a tensor sliced."""
    if not isinstance(x, Source):
        for i in range(0, len(x), batch_size):
            yield x[i: i + batch_size] if device is None else x[i: i + batch_size].to(device)
        return
    w = x.workers if workers is None else int(workers)
    if w <= 0:
        for i in range(0, len(x), batch_size):
            raw = x.read(slice(i, i + batch_size))
            yield x.decode(raw if device is None else raw.to(device))
        return
    loader = torch.utils.data.DataLoader(x.rows(), batch_size=batch_size, shuffle=False, num_workers=w,
                                         collate_fn=as_batch)
    for _, raw in loader:
        yield x.decode(raw if device is None else raw.to(device))


def apply_batched(fn, x, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``fn`` over ``x`` in batches (:func:`batches`, on ``device`` when given) without gradients: its outputs moved
    to the CPU and concatenated (an empty tensor for empty ``x``)."""
    with torch.no_grad():
        outs = [fn(b).cpu() for b in batches(x, batch_size, device=device)]
    return torch.cat(outs) if outs else torch.empty(0)
