"""A strict reader for the IDX format of MNIST and Fashion-MNIST (raw or gzip-compressed).

Layout: two zero bytes, a dtype code, the number of dimensions ``ndim``, ``ndim`` big-endian uint32 sizes, then
the data (big-endian), whose length must equal the product of the sizes times the item size exactly.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from .core import one_line

__all__ = ["read_idx", "parse_idx", "IDX_DTYPES"]

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX dtype code → big-endian numpy dtype."""

_GZIP_MAGIC = b"\x1f\x8b"
_FIX = "replace the file (delete it to download it again)"


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """The array stored in the (uncompressed) IDX bytes ``data``, in native byte order.

    Raises :class:`DataError` naming ``source`` for a bad magic number, a truncated header or data, or trailing bytes.
    """
    data = bytes(data)
    if len(data) < 4:
        raise DataError(f"{source}: truncated IDX header ({len(data)} bytes, need at least 4); {_FIX}")
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise DataError(f"{source}: not an IDX file (bad magic bytes {data[:4].hex()}, expected 0000 then a dtype "
                        f"code 08/09/0b/0c/0d/0e and the number of dimensions); {_FIX}")
    dtype = IDX_DTYPES[data[2]]
    ndim = data[3]
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions; {_FIX}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header ({len(data)} bytes, {ndim} dimensions need {header}); {_FIX}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    count = math.prod(dims)
    expected = count * dtype.itemsize
    got = len(data) - header
    if got < expected:
        raise DataError(f"{source}: truncated IDX data ({got} bytes, shape {dims} needs {expected}); {_FIX}")
    if got > expected:
        raise DataError(f"{source}: {got - expected} trailing bytes after the IDX data of shape {dims}; {_FIX}")
    native = dtype.newbyteorder("=")
    if count == 0:  # numpy still refuses a shape whose other dimensions overflow its size type
        try:
            return np.empty(dims, dtype=native)
        except ValueError as e:
            raise DataError(f"{source}: IDX shape {dims} is not a valid array ({one_line(e)}); {_FIX}") from None
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).astype(native).reshape(dims)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array in IDX file ``path``; gzip compression is detected from the content (``.gz`` or not)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read IDX file ({one_line(e.strerror or e)})") from e
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error, ValueError) as e:
            raise DataError(f"{path}: corrupt gzip data ({one_line(e)}); {_FIX}") from e
    return parse_idx(raw, str(path))
