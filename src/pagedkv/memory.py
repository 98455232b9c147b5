"""How much memory this machine has, and a refusal up front for sizes it cannot hold.

Why: a size typed with a few zeros too many (``--num-blocks 10**12``) should cost one error line
naming the option and the memory it would take, not a `MemoryError` after a minute of allocating or
a machine swapping itself to a halt. Estimates are per-item costs measured on CPython 3.11 (stated
where they are used); they only need to be right within a small factor to catch a runaway size.
Standard library only: the core manager and every command use it before importing anything heavy.
"""

from __future__ import annotations

import os

from pagedkv.errors import InvalidArgument, PagedKVError

GIB = 1 << 30


def physical_memory_bytes() -> int | None:
    """Total physical memory, or None where the OS does not say (then no check is made)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def available_memory_bytes() -> int | None:
    """Memory the kernel says can be allocated now without swapping (MemAvailable), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(num_bytes: float) -> str:
    """``14.6 TiB``: the largest binary unit that keeps the number at least 1."""
    unit = "B"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if num_bytes < 1024:
            break
        num_bytes, unit = num_bytes / 1024, larger
    return f"{num_bytes:,.1f} {unit}"


def require_memory(
    needed_bytes: float, what: str, remedy: str, error: type[PagedKVError] = InvalidArgument
) -> None:
    """Raise `error` naming `what` when `needed_bytes` exceeds this machine's physical memory."""
    total = physical_memory_bytes()
    if total is not None and needed_bytes > total:
        raise error(
            f"{what} would need about {format_bytes(needed_bytes)} of memory, more than this machine's "
            f"{format_bytes(total)}; {remedy}"
        )
