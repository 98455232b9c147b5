"""Real KV tensors behind the block manager (needs the `torch` extra: `pip install pagedkv[torch]`).

- `PagedKVCache`: block-shaped K/V for all layers, written by slot mapping, copied block-wise for
  copy-on-write, read by block table.
- `paged_attention` + `AttentionMetadata`: attention over paged K/V for a batch of sequences of
  different lengths (decode, causal prefill, prefix continuation), grouped-query attention; decode
  runs in a Numba kernel that reads blocks in place when `numba` is installed.
- `NaiveKVCache`: the contiguous one-row-per-sequence cache that paging replaces, with its waste.
"""

from pagedkv.tensors.attention import AttentionMetadata, paged_attention
from pagedkv.tensors.errors import BackendUnavailable, BlockOutOfRange, CacheMismatch
from pagedkv.tensors.kv_cache import PagedKVCache
from pagedkv.tensors.naive_cache import NaiveKVCache, NaiveMemory

__all__ = [
    "AttentionMetadata",
    "BackendUnavailable",
    "BlockOutOfRange",
    "CacheMismatch",
    "NaiveKVCache",
    "NaiveMemory",
    "PagedKVCache",
    "paged_attention",
]
