"""Checksummed, atomic downloads from a list of mirrors."""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from .._version import __version__
from ..errors import DataError
from .core import one_line

__all__ = ["download_file", "md5sum", "DOWNLOAD_TIMEOUT"]

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT = 10.0
"""Seconds to wait for a mirror to connect or send data before trying the next one."""

_CHUNK = 1 << 20


def md5sum(path: str | os.PathLike) -> str:
    """Hex md5 of a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch(url: str, dest: Path, md5: str | None, timeout: float) -> None:
    """Download ``url`` to a temporary file next to ``dest``; rename it onto ``dest`` only if the md5 matches."""
    req = urllib.request.Request(url, headers={"User-Agent": f"wae/{__version__} (python urllib)"})
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
        got = h.hexdigest()
        if md5 is not None and got != md5.lower():
            raise DataError(f"checksum mismatch (md5 {got}, expected {md5.lower()})")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def download_file(urls: str | Sequence[str], dest: str | os.PathLike, md5: str | None = None,
                  timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Download the first of ``urls`` that works to ``dest`` and return ``dest``.

    Each mirror is streamed into a temporary file in ``dest``'s directory, which is renamed onto ``dest`` only
    after its md5 equals ``md5`` (when given): ``dest`` never holds a partial or wrong file. Any scheme urllib
    knows works (``https://``, ``http://``, ``file://``). Raises :class:`DataError` when every mirror fails.
    """
    dest = Path(dest)
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list:
        raise DataError(f"no URL to download {dest.name} from")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {dest.parent} to download {dest.name} into ({one_line(e)}); "
                        f"choose a writable data directory (--data-dir or $WAE_DATA)") from e
    errors = []
    for url in url_list:
        log.info("downloading %s from %s", dest.name, url)
        try:
            _fetch(url, dest, md5, timeout)
            return dest
        except (DataError, OSError, ValueError, http.client.HTTPException) as e:  # URLError, timeouts: OSError
            if isinstance(e, urllib.error.HTTPError):
                reason = f"HTTP {e.code} {one_line(e.reason or '')}".strip()
            else:  # URLError wraps the socket error in .reason
                reason = one_line(getattr(e, "reason", None) or e)
            log.info("download of %s from %s failed: %s", dest.name, url, reason)
            errors.append(f"{url}: {reason}")
    raise DataError(f"download of {dest.name} failed: {'; '.join(errors)}")
