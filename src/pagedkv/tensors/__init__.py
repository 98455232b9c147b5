"""Real KV tensors behind the block manager (needs the `torch` extra: `pip install pagedkv[torch]`).

- `PagedKVCache`: block-shaped K/V for all layers, written by slot mapping, copied block-wise for
  copy-on-write, read by block table.
- `paged_attention` + `AttentionMetadata`: attention over paged K/V for a batch of sequences of
  different lengths (decode, causal prefill, prefix continuation), grouped-query attention; decode
  runs in a Numba kernel that reads blocks in place when `numba` is installed.
- `NaiveKVCache`: the contiguous one-row-per-sequence cache that paging replaces, with its waste.
- `kv_cache_bytes` / `check_fits_in_memory` (`pagedkv.tensors.memory`, standard library only): what a
  pool would cost, checked before anything is allocated.

Names are imported on first use (PEP 562), so `pagedkv.tensors.memory` can be used (by the CLI,
before it validates its options) without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AttentionMetadata": "pagedkv.tensors.attention_metadata",
    "paged_attention": "pagedkv.tensors.attention",
    "BackendUnavailable": "pagedkv.tensors.errors",
    "BlockOutOfRange": "pagedkv.tensors.errors",
    "CacheMismatch": "pagedkv.tensors.errors",
    "InsufficientMemory": "pagedkv.tensors.errors",
    "PagedKVCache": "pagedkv.tensors.kv_cache",
    "NaiveKVCache": "pagedkv.tensors.naive_cache",
    "NaiveMemory": "pagedkv.tensors.naive_cache",
    "kv_cache_bytes": "pagedkv.tensors.memory",
    "check_fits_in_memory": "pagedkv.tensors.memory",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pagedkv.tensors' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
