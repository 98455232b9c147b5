"""How much memory this machine has, and a refusal up front for sizes it cannot hold.

Why: a size typed with a few zeros too many (``--num-blocks 10**12``) should cost one error line
naming the option and the memory it would take, not a `MemoryError` after a minute of allocating or
a machine swapping itself to a halt. Estimates are per-item costs measured on CPython 3.11 (stated
where they are used); they only need to be right within a small factor to catch a runaway size.
"""

from __future__ import annotations

import os

from pagedkv.errors import InvalidArgument, PagedKVError

GIB = 1 << 30


def physical_memory_bytes() -> int:
    """Total physical memory (falls back to 16 GiB where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * GIB


def require_memory(
    needed_bytes: float, what: str, remedy: str, error: type[PagedKVError] = InvalidArgument
) -> None:
    """Raise `error` naming `what` when `needed_bytes` exceeds this machine's physical memory."""
    total = physical_memory_bytes()
    if needed_bytes > total:
        raise error(
            f"{what} would need about {needed_bytes / GIB:,.1f} GiB of memory, more than this machine's "
            f"{total / GIB:,.1f} GiB; {remedy}"
        )
