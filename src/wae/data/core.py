"""The :class:`Dataset` container, the data-set registry and the data-directory rules.

Every data set is registered by name with :func:`register_dataset`; :func:`load_dataset` parses names such as
``"mnist"``, ``"mnist:test"`` or ``"npz:/path/file.npz"`` and calls the loader. All user-facing failures raise
:class:`~wae.errors.DataError` with a one-line message.

Where files are looked for (:func:`data_search_dirs`):

* ``data_dir`` given: directly in ``data_dir``, then in ``data_dir/<name>``;
* else ``$WAE_DATA`` set: in ``$WAE_DATA/<name>``, then directly in ``$WAE_DATA``;
* else the user cache ``$XDG_CACHE_HOME/wae/<name>`` (default ``~/.cache/wae/<name>``).

Downloads go to :func:`resolve_data_dir` (the first of these places).
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ..errors import DataError
from ..registry import Registry
from .source import Source

__all__ = [
    "Dataset",
    "DatasetInfo",
    "register_dataset",
    "load_dataset",
    "list_datasets",
    "resolve_data_dir",
    "data_search_dirs",
    "cache_root",
    "one_line",
    "images_to_tensor",
]

Loader = Callable[..., "Dataset"]
Locator = Callable[["str | Path | None"], "tuple[bool, str]"]


# --- the container ------------------------------------------------------------------------------------------------


@dataclass(repr=False)
class Dataset:
    """A split: held whole in memory, or streamed from disk.

    ``x`` is float32: images ``N×C×H×W`` with values in [0, 1], vectors ``N×D`` (not necessarily in [0, 1]) — a
    tensor, or for data too large to hold in memory a :class:`~wae.data.source.Source` that reads the rows asked
    for (``x[i:j]``, ``x[idx]``: float32 tensors; :attr:`streamed`). ``y`` holds int64 labels (or is ``None``);
    ``num_classes`` is the number of label values when known.
    """

    name: str
    x: torch.Tensor | Source
    y: torch.Tensor | None
    num_classes: int | None = None
    description: str | None = None
    """What the split is, in words, when that matters to a reader of its numbers (e.g. a held-out test set)."""

    def __post_init__(self) -> None:
        if not isinstance(self.x, (torch.Tensor, Source)) or self.x.dim() < 2:
            raise DataError(f"{self.name}: x must be a tensor of shape N×D or N×C×H×W, got "
                            f"{getattr(self.x, 'shape', type(self.x).__name__)}")
        if self.y is not None:
            if not isinstance(self.y, torch.Tensor) or self.y.dim() != 1 or self.y.shape[0] != self.x.shape[0]:
                raise DataError(f"{self.name}: y must be a 1-D tensor of {self.x.shape[0]} labels, got "
                                f"{getattr(self.y, 'shape', type(self.y).__name__)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(1, 28, 28)`` or ``(2,)``."""
        return tuple(int(s) for s in self.x.shape[1:])

    @property
    def is_image(self) -> bool:
        """True for image data (``N×C×H×W``)."""
        return self.x.dim() == 4

    @property
    def streamed(self) -> bool:
        """True when ``x`` stays on disk (a :class:`~wae.data.source.Source`)."""
        return isinstance(self.x, Source)

    def to(self, device: str | torch.device) -> "Dataset":
        """The same data on ``device`` (streamed data stay where they are: their batches go to the device)."""
        if self.streamed:
            return self
        return dataclasses.replace(self, x=self.x.to(device), y=None if self.y is None else self.y.to(device))

    def _take(self, idx: torch.Tensor, name: str | None = None) -> "Dataset":
        """Examples ``idx`` (a sorted int64 tensor); a view of streamed data, a copy of in-memory data."""
        y = None if self.y is None else self.y[idx.to(self.y.device)]
        if self.streamed:
            return dataclasses.replace(self, name=name or self.name, x=self.x.take(idx), y=y)
        return dataclasses.replace(self, name=name or self.name, x=self.x[idx.to(self.x.device)].contiguous(), y=y)

    def subset(self, n: int, seed: int = 0) -> "Dataset":
        """``n`` examples drawn at random without replacement (deterministic given ``seed``, kept in order).

        ``n >= len(self)`` returns the data set itself.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise DataError(f"{self.name}: subset size must be a positive integer, got {n!r}")
        if n >= len(self):
            return self
        g = torch.Generator().manual_seed(int(seed))
        return self._take(torch.randperm(len(self), generator=g)[: int(n)].sort().values)

    def head(self, n: int) -> "Dataset":
        """The first ``n`` examples (a view of streamed data)."""
        return self if n >= len(self) else self._take(torch.arange(int(n)))

    def split_off(self, n: int, seed: int = 0) -> tuple["Dataset", "Dataset"]:
        """``(rest, held)``: ``n`` examples drawn at random without replacement (deterministic given ``seed``) held
        out, the others kept; both keep the original order. ``n`` must leave at least one example on each side."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n < len(self):
            raise DataError(f"{self.name}: cannot hold out {n!r} of its {len(self)} examples (need 1 ≤ n < "
                            f"{len(self)})")
        g = torch.Generator().manual_seed(int(seed))
        perm = torch.randperm(len(self), generator=g)
        held_idx, rest_idx = perm[: int(n)].sort().values, perm[int(n):].sort().values
        return self._take(rest_idx), self._take(held_idx, f"{self.name}[val]")

    def in_memory(self, limit: int | None = None, seed: int = 0) -> "Dataset":
        """The data held in memory: itself when it is; streamed data read whole, or, with more than ``limit``
        examples, a random sample of ``limit`` of them (:meth:`subset`; the work that needs the whole data set in
        memory runs on a bounded sample)."""
        if not self.streamed:
            return self
        ds = self.subset(limit, seed) if limit is not None and len(self) > limit else self
        return dataclasses.replace(ds, x=ds.x.materialize())

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, n={len(self)}, shape={self.shape}, "
                f"labels={'yes' if self.y is not None else 'no'}, num_classes={self.num_classes}"
                f"{', streamed' if self.streamed else ''})")


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`list_datasets` reports about one registered data set."""

    name: str
    description: str
    splits: tuple[str, ...]
    available_locally: bool
    where: str


# --- helpers shared by the loaders ---------------------------------------------------------------------------------


def one_line(err: BaseException | str) -> str:
    """An exception's message squeezed onto one line (its type name when it has no message)."""
    text = " ".join(str(err).split())
    if isinstance(err, BaseException) and not text:
        return type(err).__name__
    return text


def images_to_tensor(images: np.ndarray, channels_last: bool = False) -> torch.Tensor:
    """uint8 images (``N×C×H×W``, or ``N×H×W×C`` with ``channels_last``) → contiguous float32 in [0, 1]."""
    if images.dtype != np.uint8:
        raise TypeError(f"images_to_tensor expects uint8, got {images.dtype}")
    try:
        src = torch.from_numpy(images)  # strided views are fine: the copy below makes the result contiguous
    except ValueError:  # negative strides
        src = torch.from_numpy(np.ascontiguousarray(images))
    if channels_last:
        src = src.permute(0, 3, 1, 2)
    out = torch.empty(tuple(src.shape), dtype=torch.float32)
    out.copy_(src)
    return out.div_(255.0)


def labels_to_tensor(labels: np.ndarray) -> torch.Tensor:
    """Integer labels → int64 tensor."""
    return torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))


# --- data directories ---------------------------------------------------------------------------------------------


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/wae`` (default ``~/.cache/wae``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "wae"


def _given(data_dir: str | os.PathLike | None) -> Path | None:
    if data_dir is None or str(data_dir) == "":
        return None
    return Path(data_dir).expanduser()


def resolve_data_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The directory of data set ``name``: ``data_dir`` if given, else ``$WAE_DATA/<name>``, else the cache dir.

    Downloads are written here; files are also looked for in the other places of :func:`data_search_dirs`.
    """
    given = _given(data_dir)
    if given is not None:
        return given
    env = os.environ.get("WAE_DATA")
    if env:
        return Path(env).expanduser() / name
    return cache_root() / name


def data_search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every directory in which the files of ``name`` are looked for, first match wins."""
    given = _given(data_dir)
    if given is not None:
        return [given, given / name]
    env = os.environ.get("WAE_DATA")
    if env:
        base = Path(env).expanduser()
        return [base / name, base]
    return [cache_root() / name]


def find_file(names: Iterable[str], dirs: Sequence[Path]) -> Path | None:
    """The first existing file ``d/n`` over ``dirs`` (outer) and ``names`` (inner), or None."""
    for d in dirs:
        for n in names:
            p = d / n
            if p.is_file():
                return p
    return None


def format_dirs(dirs: Sequence[Path]) -> str:
    """``'a'`` or ``'a or b'`` for messages."""
    return " or ".join(str(d) for d in dirs)


# --- the registry -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    name: str
    loader: Loader
    description: str
    splits: tuple[str, ...]
    image: bool
    path_kw: str | None
    locate: Locator | None


DATASETS: Registry[_Entry] = Registry("data set", DataError)
"""Name → loader entry; the built-in data sets register when :mod:`wae.data` is imported."""
_COMMON_SPLITS = ("train", "test", "valid", "all")


def register_dataset(name: str, *, description: str, splits: Sequence[str] = ("train", "test"), image: bool = True,
                     path_kw: str | None = None, locate: Locator | None = None) -> Callable[[Loader], Loader]:
    """Decorator registering ``fn(split: str, data_dir: Path | None, **kw) -> Dataset`` under ``name``.

    ``splits`` lists the valid split names (the first is not special; :func:`load_dataset` defaults to ``train``).
    ``path_kw``: the name accepts a path suffix, ``"name:/some/path"``, passed to the loader as ``kw[path_kw]``.
    ``locate(data_dir) -> (available_locally, where)`` feeds :func:`list_datasets`.
    """
    key = name.lower()

    def deco(fn: Loader) -> Loader:
        DATASETS.add(key, _Entry(key, fn, description, tuple(splits), image, path_kw, locate))
        return fn

    return deco


def _lookup(base: str, full_name: str) -> _Entry:
    key = base.strip().lower().replace("_", "-")
    if key in DATASETS:
        return DATASETS.get(key)
    hint = ""
    if full_name.endswith((".npz", ".npy")) or os.sep in full_name:
        hint = "; for your own data use npz:/path/file.npz or folder:/path/dir"
    raise DataError(f"unknown data set {full_name!r}; known: {', '.join(DATASETS.names())}{hint}")


def _parse_name(name: str, split: str) -> tuple[_Entry, str, dict]:
    """(entry, split, extra kwargs) for a name like ``mnist``, ``mnist:test``, ``npz:/p.npz``, ``npz:/p.npz:test``."""
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"a data set name must be a non-empty string, got {name!r}")
    base, sep, rest = name.strip().partition(":")
    entry = _lookup(base, name)
    extra: dict = {}
    if not sep:
        return entry, split, extra
    if entry.path_kw is None:  # name:split; with several suffixes (mnist:train:test) the last one wins
        return entry, rest.rpartition(":")[2].strip(), extra
    # name:PATH or name:PATH:SPLIT (a trailing ":split" is only a split when PATH itself does not exist).
    head, colon, tail = rest.rpartition(":")
    if colon and head and tail in entry.splits + _COMMON_SPLITS and not Path(rest).expanduser().exists():
        rest, split = head, tail
    extra[entry.path_kw] = rest
    return entry, split, extra


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike | None = None, **kw) -> Dataset:
    """Load split ``split`` of data set ``name``: in memory, or streamed from disk when its loader finds it too large
    (:func:`~wae.data.memory.in_memory_bytes`; ``ds.streamed``).

    Names: ``mnist``; ``mnist:test`` (the suffix overrides ``split``; with several suffixes the last wins);
    ``npz:/path/file.npz`` or ``folder:/path/dir``, optionally followed by ``:split``. Unknown names, splits or
    options raise :class:`DataError`.

    ``data_dir``: where the files are (see :func:`data_search_dirs`); ``kw`` go to the loader (e.g. ``download``).
    """
    entry, split, extra = _parse_name(name, split)
    if split not in entry.splits:
        raise DataError(f"{entry.name} has no split {split!r}; splits: {', '.join(entry.splits)}")
    kw = {**extra, **kw}
    params = inspect.signature(entry.loader).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kw) - set(params))
        if unknown:
            options = sorted(set(params) - {"split", "data_dir"})
            raise DataError(f"{entry.name}: unknown option(s) {', '.join(unknown)}; options: "
                            f"{', '.join(options) or 'none'}")
    given = _given(data_dir)
    ds = entry.loader(split, given, **kw)
    if entry.image and not ds.streamed and ds.x.dim() == 4 and not ds.x.is_contiguous():
        ds = dataclasses.replace(ds, x=ds.x.contiguous())
    return ds


def list_datasets(data_dir: str | os.PathLike | None = None) -> list[DatasetInfo]:
    """Every registered data set, with whether its files are present (looked for as with ``data_dir``)."""
    out = []
    for key in DATASETS.names():
        e = DATASETS.get(key)
        available, where = (True, "built in") if e.locate is None else e.locate(_given(data_dir))
        out.append(DatasetInfo(e.name, e.description, e.splits, bool(available), where))
    return out
