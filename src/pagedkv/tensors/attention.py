"""Paged attention: queries attend to the keys/values that their block tables point to.

One call serves a whole batch of sequences of different lengths, for decode (one query per
sequence), prefill (causal, many queries) and prefill that continues a cached prefix (the queries
are the last `query_len` of `context_len` tokens). Grouped-query attention is handled by folding the
`n_heads // n_kv_heads` query heads that share a KV head together, so no key or value is ever repeated.

How K/V are read: the pool of one layer, `[num_blocks, n_kv_heads, block_size, head_dim]`, is viewed
as one row per (block, KV head) tile, `[num_blocks * n_kv_heads, block_size * head_dim]`. A row
`index_select` in (sequence, KV head, block) order lands as `[seqs, n_kv_heads, tokens, head_dim]`:
one contiguous `[tokens, head_dim]` matrix per (sequence, KV head) pair, which `bmm` and
`scaled_dot_product_attention` read as it is.

- Prefill (compute-bound): sequences are cut into groups whose gathered K/V fit a reused workspace;
  each group is gathered whole and `scaled_dot_product_attention` runs on it with a mask for
  lengths, causality and sliding windows.
- Decode (memory-bound: every K/V byte is used by only `n_rep` queries): gathering the whole group
  and then attending would move every byte through DRAM three times. Instead the (sequence, KV
  head) pairs are processed in chunks of about 1 MiB of tiles per thread, so each chunk's tiles are
  read from DRAM once by the gather and then from cache by the matmul. Two passes: scores =
  q @ K^T chunk by chunk into `[pairs, n_rep, tokens]` (1/64 of the keys' size for head_dim 128
  and 4 query heads per KV head), one masked softmax over whole rows, then probabilities @ V
  chunk by chunk. A pair longer than a chunk is split along its tokens (its output accumulates
  with `baddbmm_`). The softmax sees complete rows, so no log-sum-exp merging is needed and the
  result is exact softmax attention.
- Decode with the "numba" backend (the default when Numba is installed and the tensors are float32 /
  float64 on the CPU): `pagedkv.tensors.numba_decode` reads each tile in place inside the attention
  loop, which removes the copy that the plain-PyTorch path cannot avoid.

All paths compute the same function as contiguous SDPA, so they agree with it to rounding. Everything
that depends only on the block tables and lengths (groups, gather indices, chunks, masks, the
kernel's decode batch) lives in `AttentionMetadata` (`pagedkv.tensors.attention_metadata`, the batch
planning), built once per engine step and reused by every layer; this module only computes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from types import ModuleType

import torch
import torch.nn.functional as F

from pagedkv.errors import InvalidArgument
from pagedkv.tensors.attention_metadata import AttentionMetadata, BatchGroup, DecodeChunk
from pagedkv.tensors.errors import BackendUnavailable, CacheMismatch


def paged_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    metadata: AttentionMetadata,
    *,
    scale: float | None = None,
    sliding_window: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention of packed queries over paged K/V.

    query: [num_query_tokens, n_heads, head_dim], sequence by sequence in metadata order (sequence i
    contributes its query_lens[i] rows, oldest position first). key_cache, value_cache:
    [num_blocks, n_kv_heads, block_size, head_dim] with n_heads a multiple of n_kv_heads.
    scale: multiplies q @ k (default 1 / sqrt(head_dim), as SDPA).
    sliding_window: a query at position p sees keys p - sliding_window + 1 .. p (HF's convention).
    backend: how decode runs. "numba": the kernel that reads blocks in place
    (`pagedkv.tensors.numba_decode`; raises BackendUnavailable without Numba or for tensors it does
    not handle); "torch": the plain-PyTorch split-K path; "auto": "numba" when it can serve the call,
    else "torch". Prefill always runs on PyTorch's SDPA.
    Returns [num_query_tokens, n_heads, head_dim].
    """
    _check_inputs(query, key_cache, value_cache, metadata)
    numba_decode = _numba_decode(backend, query, key_cache, value_cache)
    num_blocks, num_kv_heads, block_size, head_dim = key_cache.shape
    scale = head_dim**-0.5 if scale is None else scale
    out = torch.empty_like(query, memory_format=torch.contiguous_format)
    batch = metadata.decode_batch
    if numba_decode is not None and batch is not None:  # every decode sequence in one call
        numba_decode(
            query, key_cache, value_cache, batch.rows, batch.block_table, batch.context_lens,
            scale, sliding_window, out,
        )  # fmt: skip
    tile_shape = (num_blocks * num_kv_heads, block_size * head_dim)
    key_tiles = key_cache.reshape(tile_shape)  # one row per (block, KV head) tile
    value_tiles = value_cache.reshape(tile_shape)
    workspace = metadata.workspace(block_size * head_dim, key_cache)
    for group in metadata.groups:
        if group.chunks and numba_decode is not None:
            continue  # served by the kernel above
        attend = _decode if group.chunks else _prefill
        attend(query, (key_tiles, value_tiles), workspace, group, num_kv_heads, scale, sliding_window, out)
    return out


BACKENDS = ("auto", "torch", "numba")


def _numba_decode(
    backend: str, query: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor
) -> Callable[..., None] | None:
    """The Numba decode function if `backend` selects it for these tensors, None for the torch path."""
    if backend not in BACKENDS:
        raise InvalidArgument(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "torch":
        return None
    module = _import_numba_decode()
    if module is None:
        if backend == "numba":
            raise BackendUnavailable(
                "backend='numba' needs the numba package: pip install numba (or use backend='auto')"
            )
        return None
    reason = module.supports(query, key_cache, value_cache)
    if reason is not None:
        if backend == "numba":
            raise BackendUnavailable(f"backend='numba' cannot serve this call: {reason}; use backend='auto'")
        return None
    return module.decode


@cache
def _import_numba_decode() -> ModuleType | None:
    """pagedkv.tensors.numba_decode, or None when Numba is not installed (imported once: it is slow)."""
    try:
        from pagedkv.tensors import numba_decode
    except ImportError:
        return None
    return numba_decode


def _prefill(
    query: torch.Tensor,
    tiles: tuple[torch.Tensor, torch.Tensor],
    workspace: tuple[torch.Tensor, torch.Tensor],
    group: BatchGroup,
    num_kv_heads: int,
    scale: float,
    sliding_window: int | None,
    out: torch.Tensor,
) -> None:
    """Gather the group's K/V whole and run SDPA with a causal / length / window mask."""
    n_heads, head_dim = query.shape[1], query.shape[2]
    rows = group.tiles.numel()
    shape = (group.num_seqs, num_kv_heads, group.num_slots, head_dim)
    # keys, values: [num_seqs, n_kv_heads, num_slots, head_dim] (views of the workspace)
    keys = torch.index_select(tiles[0], 0, group.tiles, out=workspace[0][:rows]).view(shape)
    values = torch.index_select(tiles[1], 0, group.tiles, out=workspace[1][:rows]).view(shape)
    n_rep = n_heads // num_kv_heads
    q = _fold_queries(query[group.query_start : group.query_end], group, num_kv_heads, n_rep)
    mask = group.mask(sliding_window, n_rep)
    o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scale)
    out[group.query_start : group.query_end] = _unfold_output(o, group, n_heads)


def _decode(
    query: torch.Tensor,
    tiles: tuple[torch.Tensor, torch.Tensor],
    workspace: tuple[torch.Tensor, torch.Tensor],
    group: BatchGroup,
    num_kv_heads: int,
    scale: float,
    sliding_window: int | None,
    out: torch.Tensor,
) -> None:
    """Split-K decode: scores chunk by chunk, one softmax over whole rows, then P @ V chunk by chunk."""
    n_heads, head_dim = query.shape[1], query.shape[2]
    pairs, n_rep = group.num_seqs * num_kv_heads, n_heads // num_kv_heads
    # q: [pairs, n_rep, head_dim]; query head h of a sequence uses KV head h // n_rep, as HF's repeat_kv
    q = query[group.query_start : group.query_end].reshape(pairs, n_rep, head_dim) * scale
    scores = q.new_empty((pairs, n_rep, group.num_slots))
    for chunk in group.chunks:
        keys = _gather_chunk(tiles[0], chunk, workspace[0], head_dim)
        torch.bmm(q[chunk.pairs], keys.transpose(1, 2), out=scores[chunk.pairs, :, chunk.slots])
    excluded = group.excluded(sliding_window)
    if excluded is not None:
        scores.view(group.num_seqs, num_kv_heads, n_rep, -1).masked_fill_(excluded, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    o = out[group.query_start : group.query_end].view(pairs, n_rep, head_dim)
    for chunk in group.chunks:
        values = _gather_chunk(tiles[1], chunk, workspace[1], head_dim)
        if chunk.slots.start == 0:
            torch.bmm(probs[chunk.pairs, :, chunk.slots], values, out=o[chunk.pairs])
        else:  # a later piece of a pair split along its tokens
            o[chunk.pairs].baddbmm_(probs[chunk.pairs, :, chunk.slots], values)


def _gather_chunk(
    tiles: torch.Tensor, chunk: DecodeChunk, buffer: torch.Tensor, head_dim: int
) -> torch.Tensor:
    """The chunk's K or V tiles as [chunk pairs, chunk slots, head_dim], a view of `buffer`."""
    rows = torch.index_select(tiles, 0, chunk.tiles, out=buffer[: chunk.tiles.numel()])
    return rows.view(chunk.pairs.stop - chunk.pairs.start, chunk.slots.stop - chunk.slots.start, head_dim)


def _fold_queries(q: torch.Tensor, group: BatchGroup, num_kv_heads: int, n_rep: int) -> torch.Tensor:
    """[group queries, n_heads, D] -> [num_seqs, n_kv_heads, n_rep * max_q, D] (row r * max_q + j)."""
    g, max_q, head_dim = group.num_seqs, group.max_query_len, q.shape[-1]
    if group.query_index is not None:
        padded = q.new_zeros((g * max_q, q.shape[1], head_dim))
        q = padded.index_copy_(0, group.query_index, q)
    return (
        q.view(g, max_q, num_kv_heads, n_rep, head_dim)
        .permute(0, 2, 3, 1, 4)
        .reshape(g, num_kv_heads, -1, head_dim)
    )


def _unfold_output(o: torch.Tensor, group: BatchGroup, n_heads: int) -> torch.Tensor:
    """Inverse of `_fold_queries`: [num_seqs, n_kv_heads, n_rep * max_q, D] -> [group queries, n_heads, D]."""
    g, max_q, head_dim = group.num_seqs, group.max_query_len, o.shape[-1]
    n_kv_heads = o.shape[1]
    o = (
        o.view(g, n_kv_heads, -1, max_q, head_dim)
        .permute(0, 3, 1, 2, 4)
        .reshape(g * max_q, n_heads, head_dim)
    )
    return o if group.query_index is None else o.index_select(0, group.query_index)


def _check_inputs(
    query: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, metadata: AttentionMetadata
) -> None:
    if key_cache.dim() != 4 or key_cache.shape != value_cache.shape:
        raise CacheMismatch(
            f"key/value caches must both be [num_blocks, n_kv_heads, block_size, head_dim], got "
            f"{tuple(key_cache.shape)} and {tuple(value_cache.shape)}"
        )
    if tuple(key_cache.shape) != metadata.cache_shape:
        raise CacheMismatch(
            f"the metadata was built for a cache of shape {metadata.cache_shape} "
            "[num_blocks, n_kv_heads, block_size, head_dim], "
            f"the cache has {tuple(key_cache.shape)}; build it with this layer's key_cache"
        )
    num_kv_heads, head_dim = key_cache.shape[1], key_cache.shape[3]
    if query.dim() != 3 or query.shape[0] != metadata.num_query_tokens or query.shape[2] != head_dim:
        raise CacheMismatch(
            f"query has shape {tuple(query.shape)}, "
            f"expected [{metadata.num_query_tokens}, n_heads, {head_dim}]"
        )
    if query.shape[1] % num_kv_heads:
        raise CacheMismatch(f"{query.shape[1]} query heads are not a multiple of {num_kv_heads} KV heads")
    for name, tensor in (("key_cache", key_cache), ("value_cache", value_cache)):
        if tensor.dtype != query.dtype or tensor.device != query.device:
            raise CacheMismatch(
                f"query is {query.dtype} on {query.device} but {name} is {tensor.dtype} on {tensor.device}"
            )
