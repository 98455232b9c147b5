"""What a paged KV pool costs, and whether this machine can hold it: checked before allocating.

Standard library only, so the `generate` command can refuse `--num-blocks 10**7` in a fraction of a
second, before torch is even imported, instead of dying in `torch.zeros` (or swapping) minutes later.

Invariant: `kv_cache_bytes` is exactly `PagedKVCache(...).nbytes` for the same sizes (a test holds
them equal), so the check and the allocation can never disagree.
"""

from __future__ import annotations

from pagedkv.memory import GIB, available_memory_bytes
from pagedkv.tensors.errors import InsufficientMemory

__all__ = ["GIB", "available_memory_bytes", "check_fits_in_memory", "kv_cache_bytes"]


def kv_cache_bytes(
    num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int, element_size: int
) -> int:
    """Bytes of K and V for every layer: [num_layers, 2, num_blocks, num_kv_heads, block_size, head_dim]."""
    return num_layers * 2 * num_blocks * num_kv_heads * block_size * head_dim * element_size


def check_fits_in_memory(nbytes: int, what: str, remedy: str) -> None:
    """Raise `InsufficientMemory` (naming `what`, the GiB needed and free, and `remedy`) when `nbytes`
    exceeds the memory available now; do nothing when the amount free cannot be known."""
    available = available_memory_bytes()
    if available is not None and nbytes > available:
        raise InsufficientMemory(
            f"{what} needs {nbytes / GIB:,.2f} GiB but only {available / GIB:,.2f} GiB of memory is "
            f"available; {remedy}"
        )
