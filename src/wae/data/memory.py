"""The memory a process may use — the least of the memory available, the address-space limit (``ulimit -v``) less
what is mapped, and the container's cgroup limit — and the sizes checked against it before data are read."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError

__all__ = ["IN_MEMORY_BYTES", "format_bytes", "in_memory_bytes", "max_array_bytes", "memory_limit", "too_big"]


def _proc_kib(path: str, key: str) -> int | None:
    """The value of ``key`` (in kB) in a Linux /proc status file, in bytes; None where the system does not show it."""
    try:
        with open(path, "rb") as f:
            for line in f.read(65536).decode("ascii", "replace").splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _meminfo_available() -> int | None:
    available = _proc_kib("/proc/meminfo", "MemAvailable")
    if available is not None:
        return available
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _mapped_bytes() -> int:
    """The address space the process has mapped now (Linux ``VmSize``; 0 where the system does not show it)."""
    return _proc_kib("/proc/self/status", "VmSize") or 0


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) and garbage: None


def _cgroup_left(root: Path) -> tuple[int, int] | None:
    """``(limit, bytes left under it)`` of the cgroup memory limit the process lives under (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``), or None when there is none."""
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        limit = _read_int(root / limit_file)
        if limit is not None and limit < 2 ** 60:  # v1 writes a huge number for "no limit"
            return limit, max(0, limit - (_read_int(root / usage_file) or 0))
    return None


def memory_limit(cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> tuple[int, str]:
    """``(bytes, what)``: the most memory one read may allocate in this process, and what sets it, in words.

    The environment variable ``WAE_MAX_ARRAY_BYTES`` when set; else the least of the memory available now (Linux
    ``MemAvailable``, or the free physical pages), the address-space limit (``ulimit -v``, ``RLIMIT_AS``) less what
    the process has already mapped, and the container's cgroup memory limit less its usage; 16 GiB when none is
    known."""
    env = os.environ.get("WAE_MAX_ARRAY_BYTES", "").strip()
    if env:
        try:
            return max(1, int(float(env))), "set by WAE_MAX_ARRAY_BYTES"
        except (ValueError, OverflowError):
            raise DataError(f"WAE_MAX_ARRAY_BYTES must be a number of bytes, got {env[:40]!r}") from None
    found: list[tuple[int, str]] = []
    avail = _meminfo_available()
    if avail is not None:
        found.append((avail, "the memory available"))
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY and soft > 0:
            mapped = _mapped_bytes()
            found.append((max(0, soft - mapped), f"the address-space limit (ulimit -v {soft // 1024}) less the "
                                                 f"{format_bytes(mapped)} the process has mapped"))
    except (ImportError, ValueError, OSError):
        pass
    cg = _cgroup_left(Path(cgroup_root))
    if cg is not None:
        found.append((cg[1], f"the container's memory limit ({format_bytes(cg[0])}, cgroup) less its usage"))
    return min(found, key=lambda t: t[0]) if found else (16 * 2 ** 30, "a default of 16 GiB")


def max_array_bytes() -> int:
    """The most bytes the arrays read from one of a user's files may take (with their float32 copy):
    :func:`memory_limit`. The readers check declared sizes against it before allocating anything."""
    return memory_limit()[0]


def too_big(what: str, need: int, fix: str) -> DataError:
    """The one-line refusal of a read of ``need`` bytes above :func:`memory_limit`: names ``what`` (the file), the
    size, the limit and what sets it."""
    budget, why = memory_limit()
    return DataError(f"{what} needs {format_bytes(need)} in memory, more than the {format_bytes(budget)} this "
                     f"process may use ({why}; WAE_MAX_ARRAY_BYTES sets it): {fix}")


IN_MEMORY_BYTES = 2 ** 30
"""Data whose float32 copy (with what is read to make it) takes more than this are streamed from disk where their
storage allows it (``WAE_IN_MEMORY_BYTES`` sets it; 0 streams all such data)."""


def in_memory_bytes() -> int:
    """The most bytes a data set held whole in memory may take: ``WAE_IN_MEMORY_BYTES`` (default
    :data:`IN_MEMORY_BYTES`), and never more than :func:`memory_limit`."""
    env = os.environ.get("WAE_IN_MEMORY_BYTES", "").strip()
    limit = IN_MEMORY_BYTES
    if env:
        try:
            limit = max(0, int(float(env)))
        except (ValueError, OverflowError):
            raise DataError(f"WAE_IN_MEMORY_BYTES must be a number of bytes, got {env[:40]!r}") from None
    return min(limit, max_array_bytes())


def format_bytes(n: int | float) -> str:
    """``1536`` → ``'1.5 KiB'``: a byte count for messages."""
    n = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
