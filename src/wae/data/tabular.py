"""Tables of numbers: ``csv:/path/file.csv`` (also ``.tsv``, ``.txt``) — one example per row, one feature per column.

* Delimiter: a tab for ``.tsv``/``.tab`` files, else the first of tab, comma, semicolon found in the first line, else
  runs of whitespace. Fields may be quoted (``"``).
* Header: the first line is a header when any of its fields is not a number. A header column named ``label``,
  ``labels``, ``y``, ``class`` or ``target`` (any case) holds the labels — integers, or names mapped to 0…C−1 in
  sorted order — and is not a feature.
* Every other field must be a finite number: a text field, an empty one, ``nan`` or ``inf``, or a row with another
  number of fields ends in one line naming the row and the column.

The values are returned as they are (float32 vectors ``N×D``); rescaling is the consumer's (the estimator
standardises them, see :mod:`wae.estimator`).
"""
from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .core import Dataset, labels_to_tensor, one_line, register_dataset

__all__ = ["load_table", "LABEL_COLUMNS"]

LABEL_COLUMNS = ("label", "labels", "y", "class", "target")


def _delimiter(path: Path, first: str) -> str | None:
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    for d in ("\t", ",", ";"):
        if d in first:
            return d
    return None  # whitespace


def _split(line: str, delim: str | None) -> list[str]:
    if delim is None:
        return line.split()
    return next(csv.reader([line], delimiter=delim, quotechar='"'), [])


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _column_name(header: list[str] | None, j: int) -> str:
    return f"{j + 1} ({header[j]!r})" if header and j < len(header) else str(j + 1)


def load_table(path: str | os.PathLike) -> Dataset:
    """The rows of a CSV/TSV file of numbers as vectors (see the module doc for header, labels and errors)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"csv: file {path} not found; pass csv:/path/to/file.csv (one example per row)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"csv: {path} is not UTF-8 text; save it as a CSV/TSV text file") from None
    except OSError as e:
        raise DataError(f"csv: cannot read {path} ({one_line(e)})") from None
    lines = text.splitlines()
    start = next((i for i, s in enumerate(lines) if s.strip()), None)
    if start is None:
        raise DataError(f"csv: {path} is empty")
    delim = _delimiter(path, lines[start])
    first = [f.strip() for f in _split(lines[start], delim)]
    header = first if not all(_is_number(f) for f in first) else None
    ncol = len(first)
    label_j = None
    if header is not None:
        hits = [j for j, h in enumerate(header) if h.lower() in LABEL_COLUMNS]
        label_j = hits[0] if hits else None
    feat = [j for j in range(ncol) if j != label_j]
    if not feat:
        raise DataError(f"csv: {path} has no feature columns (only {header[label_j]!r})")
    body = "\n".join(lines[start + (1 if header is not None else 0):])
    if not body.strip():
        raise DataError(f"csv: {path} has a header but no rows")
    skip = start + (1 if header is not None else 0)  # file line number of body row 1, minus one
    kw = {"delimiter": delim, "quotechar": '"', "ndmin": 2, "comments": None}
    try:
        cells = np.loadtxt(io.StringIO(body), dtype=str, **kw)  # all columns: a ragged row is an error here
    except ValueError as e:
        raise DataError(f"csv: {path}: {_explain(str(e), skip, header)}") from None
    if cells.shape[0] == 0:
        raise DataError(f"csv: {path} has no rows")
    if cells.shape[1] != ncol:
        raise DataError(f"csv: {path}: the rows have {cells.shape[1]} fields, the first line {ncol}: every row needs "
                        "the same columns")
    try:
        x = np.char.strip(cells[:, feat]).astype(np.float64)
    except ValueError:  # find the first field that is not a number (the error path only)
        r, c = next((r, c) for r in range(cells.shape[0]) for c in feat if not _is_number(cells[r, c].strip()))
        value = cells[r, c].strip()
        what = "an empty field" if value == "" else f"{value!r} is not a number"
        raise DataError(f"csv: {path}: line {skip + r + 1}, column {_column_name(header, c)}: {what}; only numeric "
                        f"columns can be clustered (a label column must be named {'/'.join(LABEL_COLUMNS)})") from None
    y_raw = cells[:, label_j] if label_j is not None else None
    bad = ~np.isfinite(x)
    if bad.any():
        r, c = map(int, np.argwhere(bad)[0])
        raise DataError(f"csv: {path} line {skip + r + 1}, column {_column_name(header, feat[c])}: {x[r, c]} — NaN "
                        "and infinite values cannot be clustered; drop or fill those rows")
    y, k = None, None
    if y_raw is not None:
        y_raw = np.char.strip(y_raw)
        if all(_is_integer(v) for v in np.unique(y_raw)):
            yi = y_raw.astype(np.float64).astype(np.int64)
            if yi.min() < 0:
                raise DataError(f"csv: {path}: column {header[label_j]!r} holds negative labels; use 0..C-1 or names")
        else:
            _, yi = np.unique(y_raw, return_inverse=True)
        y, k = labels_to_tensor(yi.astype(np.int64)), int(yi.max()) + 1
    return Dataset(f"csv:{path}", torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), y, num_classes=k)


def _is_integer(s: str) -> bool:
    try:
        return float(s).is_integer()
    except ValueError:
        return False


def _explain(msg: str, skip: int, header: list[str] | None) -> str:
    """numpy.loadtxt's message, in the file's line numbers, on one line."""
    msg = msg.strip().splitlines()[0] if msg.strip() else "unreadable"
    m = re.search(r"number of columns changed from (\d+) to (\d+) at row (\d+)", msg)
    if m:
        return (f"line {skip + int(m.group(3))} has {m.group(2)} fields, the lines before it {m.group(1)}: every row "
                "needs the same columns")
    return msg


@register_dataset("csv", description="your own table of numbers: csv:/path/file.csv or .tsv (one example per row; "
                  "a header column named label/y/class gives labels)", splits=("train",), image=False,
                  path_kw="path", locate=lambda d: (True, "your file: csv:/path/to/file.csv"))
def _csv(split: str, data_dir: Path | None, path: str | os.PathLike | None = None) -> Dataset:
    if path is None or str(path) == "":
        raise DataError("csv: no file given; use csv:/path/to/file.csv")
    p = Path(path).expanduser()
    if not p.is_absolute() and data_dir is not None and not p.exists():
        p = data_dir / p
    return load_table(p)
