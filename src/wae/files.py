"""Atomic file writes: a crash leaves the old file or the new one, never a partial one (the ground floor: no model,
no training engine); tables and arrays written chunk by chunk (:class:`TableWriter`, :class:`NpzWriter`)."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_with", "write_json", "TableWriter", "NpzWriter",
           "TABLE_FORMATS", "parquet_available"]


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


TABLE_FORMATS = ("csv", "parquet")


def parquet_available() -> bool:
    """Whether Parquet tables can be written (pyarrow is installed)."""
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


class _ChunkedWriter:
    """A file written chunk by chunk into a temporary name: ``with`` commits it (``close``) when the block ends
    normally and removes every trace (``abort``) when it raises."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class TableWriter(_ChunkedWriter):
    """A table written chunk by chunk, so that memory holds one chunk whatever the number of rows: CSV (cells
    formatted by :meth:`write`'s caller or here: floats ``%.6g``) or Parquet (typed columns; needs pyarrow). Rows go
    into a temporary file beside ``path``, renamed into place by :meth:`close` (atomic, like :func:`atomic_write_with`);
    :meth:`abort` removes it. Use as a context manager: an exception aborts."""

    def __init__(self, path: str | Path, columns: list[str], fmt: str = "csv", lineterminator: str = "\n"):
        if fmt not in TABLE_FORMATS:
            raise ValueError(f"table format must be one of {TABLE_FORMATS}, got {fmt!r}")
        self.path, self.columns, self.fmt, self.rows = Path(path), list(columns), fmt, 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._pq = None
        if fmt == "csv":
            import csv

            self._f = open(self.tmp, "w", newline="", encoding="utf-8")
            self._csv = csv.writer(self._f, lineterminator=lineterminator)
            self._csv.writerow(self.columns)

    def write(self, cols: list) -> None:
        """One chunk: a 1-D array (or list) per column, in the order of ``columns``, all of one length. CSV cells:
        strings as given, floats ``%.6g``, other values ``str``."""
        if self.fmt == "csv":
            import numpy as np

            cells = [c if isinstance(c, list) else (np.char.mod("%.6g", c) if c.dtype.kind == "f" else c.astype(str))
                     .tolist() for c in cols]
            self._csv.writerows(zip(*cells))
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.table({name: pa.array(c) for name, c in zip(self.columns, cols)})
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.tmp, table.schema)
            self._pq.write_table(table)
        self.rows += len(cols[0]) if cols else 0

    def close(self) -> Path:
        """Finish the file and move it into place."""
        if self.fmt == "csv":
            self._f.close()
        elif self._pq is not None:
            self._pq.close()
        else:  # no rows: an empty table with the columns
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({name: pa.array([], pa.string()) for name in self.columns}), self.tmp)
        mode = 0o666 & ~_umask()
        with open(self.tmp, "rb+") as f:
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop what was written (the file in place, if any, is left as it was)."""
        try:
            if self.fmt == "csv":
                self._f.close()
            elif self._pq is not None:
                self._pq.close()
        finally:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass



class NpzWriter(_ChunkedWriter):
    """Arrays of ``n`` rows written chunk by chunk into an uncompressed ``.npz`` (``numpy.load`` reads it as it reads
    ``numpy.savez``'s): each array's rows are appended to a ``.npy`` file of their own beside ``path`` (memory: one
    chunk), stored into the zip by :meth:`close` in the order the arrays first came, and the zip renamed into place
    (atomic); :meth:`abort` removes everything. Use as a context manager: an exception aborts."""

    def __init__(self, path: str | Path, n: int):
        self.path, self.n = Path(path), int(n)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self._files: dict = {}
        self._rows: dict[str, int] = {}

    def write(self, **chunks) -> None:
        """The next rows of each named array (all chunks of one array share its dtype and row shape)."""
        import numpy as np

        for name, chunk in chunks.items():
            chunk = np.ascontiguousarray(chunk)
            if name not in self._files:
                f = open(self.dir / f"{name}.npy", "wb")
                np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(chunk.dtype),
                                                         "fortran_order": False,
                                                         "shape": (self.n, *chunk.shape[1:])})
                self._files[name], self._rows[name] = f, 0
            self._files[name].write(chunk.tobytes())
            self._rows[name] += len(chunk)

    def close(self) -> Path:
        import zipfile

        for name, f in self._files.items():
            f.close()
            if self._rows[name] != self.n:
                raise ValueError(f"{self.path}: array {name} got {self._rows[name]} rows of {self.n}")

        def zip_them(tmp):
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name in self._files:
                    zf.write(self.dir / f"{name}.npy", f"{name}.npy")

        try:
            atomic_write_with(self.path, zip_them)
        finally:
            self._cleanup()
        return self.path

    def _cleanup(self) -> None:
        import shutil

        for f in self._files.values():
            f.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def abort(self) -> None:
        self._cleanup()

