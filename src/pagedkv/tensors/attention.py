"""Paged attention: queries attend to the keys/values that their block tables point to.

One call serves a whole batch of sequences of different lengths, for decode (one query per
sequence), prefill (causal, many queries) and prefill that continues a cached prefix (the queries
are the last `query_len` of `context_len` tokens). Grouped-query attention is handled by folding the
`n_heads // n_kv_heads` query heads that share a KV head into the query-length axis, so no key or
value is ever repeated.

How it runs: sequences are cut into groups whose gathered K/V fit a small workspace (a few MiB,
so it stays in cache); for each group the blocks are gathered by block table with one row
`index_select` per K and V into `[group, blocks * block_size, n_kv_heads, head_dim]`, and
`scaled_dot_product_attention` runs on that with a mask for lengths, causality and sliding windows.
The result is the same computation as contiguous SDPA, so it agrees with it to rounding.

Everything that depends only on the block tables and lengths (groups, gather indices, masks) lives
in `AttentionMetadata`, built once per engine step and reused by every layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from pagedkv.errors import InvalidArgument
from pagedkv.tensors.errors import BlockOutOfRange, CacheMismatch

WORKSPACE_BYTES = 16 * 2**20
"""Budget for the gathered K and V of one group. Measured on a 2-core CPU (benchmarks/bench_attention.py):
groups of 8-32 MiB run ~2x faster than gathering the whole batch, which spills to DRAM twice."""


@dataclass
class _Group:
    """Consecutive sequences attended in one SDPA call; all decode (one query each) or all prefill."""

    query_start: int  # rows [query_start, query_end) of the packed query belong to this group
    query_end: int
    num_seqs: int
    max_query_len: int
    num_slots: int  # padded KV length: blocks per sequence * block_size
    block_ids: torch.Tensor  # [num_seqs * blocks] long, each sequence's table padded to `blocks`
    query_index: torch.Tensor | None  # row of each real query in [num_seqs * max_query_len]; None: no padding
    query_pos: torch.Tensor  # [num_seqs, max_query_len] long: position of each query, clamped to len - 1
    unmasked: bool  # decode over exactly `num_slots` keys each: nothing to mask
    masks: dict[tuple[int | None, int], torch.Tensor] = field(default_factory=dict)

    def mask(self, sliding_window: int | None, n_rep: int) -> torch.Tensor | None:
        """[num_seqs, 1, n_rep * max_query_len, num_slots] bool (True = attend), or None if all True."""
        if self.unmasked and (sliding_window is None or sliding_window >= self.num_slots):
            return None
        key = (sliding_window, n_rep)
        if key not in self.masks:
            key_pos = torch.arange(self.num_slots, device=self.query_pos.device)
            query_pos = self.query_pos.unsqueeze(-1)  # [num_seqs, max_q, 1]
            allowed = key_pos <= query_pos  # causal; query_pos <= len - 1 also hides the padding
            if sliding_window is not None:
                allowed &= key_pos > query_pos - sliding_window
            self.masks[key] = allowed.repeat(1, n_rep, 1).unsqueeze(1)
        return self.masks[key]


class AttentionMetadata:
    """Per-step description of a batch for `paged_attention`: who attends to which blocks.

    Build it with `AttentionMetadata.build`; it validates the block tables against the pool once,
    so the per-layer calls only check tensor shapes.
    """

    def __init__(self, groups: list[_Group], num_query_tokens: int, num_blocks: int, block_size: int) -> None:
        self.groups = groups
        self.num_query_tokens = num_query_tokens
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._workspace: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def build(
        cls,
        block_tables: Sequence[Sequence[int]] | torch.Tensor,
        context_lens: Sequence[int] | torch.Tensor,
        query_lens: Sequence[int] | torch.Tensor | None = None,
        *,
        key_cache: torch.Tensor,
        workspace_bytes: int = WORKSPACE_BYTES,
    ) -> AttentionMetadata:
        """Describe a batch.

        block_tables[i]: block ids of sequence i (a padded [batch, max_blocks] tensor is fine; only
        the first ceil(context_lens[i] / block_size) entries are read). context_lens[i]: tokens of
        K/V sequence i attends over, its own queries included. query_lens[i]: how many of its last
        tokens are queries (None: 1 each, i.e. decode). key_cache gives the pool's geometry:
        [num_blocks, block_size, num_kv_heads, head_dim].
        """
        tables = _as_lists(block_tables)
        contexts = _as_ints(context_lens)
        queries = [1] * len(contexts) if query_lens is None else _as_ints(query_lens)
        num_blocks, block_size = key_cache.shape[0], key_cache.shape[1]
        _validate(tables, contexts, queries, num_blocks, block_size)
        slot_bytes = 2 * key_cache[0, 0].numel() * key_cache.element_size()
        groups: list[_Group] = []
        start = query_start = 0
        while start < len(contexts):
            end = _group_end(contexts, queries, start, block_size, slot_bytes, workspace_bytes)
            group = _make_group(
                tables, contexts, queries, start, end, query_start, block_size, key_cache.device
            )
            groups.append(group)
            query_start = group.query_end
            start = end
        return cls(groups, query_start, num_blocks, block_size)

    def workspace(self, rows: int, row_numel: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reusable gather buffers ([rows, row_numel] for K and V): allocated once, shared by all layers."""
        buffers = self._workspace
        if buffers is None or buffers[0].shape[0] < rows or buffers[0].shape[1] != row_numel:
            buffers = tuple(like.new_empty((rows, row_numel)) for _ in range(2))
        elif buffers[0].dtype != like.dtype or buffers[0].device != like.device:
            buffers = tuple(like.new_empty(buffers[0].shape) for _ in range(2))
        self._workspace = buffers
        return buffers[0][:rows], buffers[1][:rows]


def paged_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    metadata: AttentionMetadata,
    *,
    scale: float | None = None,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Attention of packed queries over paged K/V.

    query: [num_query_tokens, n_heads, head_dim], sequence by sequence in metadata order (sequence i
    contributes its query_lens[i] rows, oldest position first). key_cache, value_cache:
    [num_blocks, block_size, n_kv_heads, head_dim] with n_heads a multiple of n_kv_heads.
    sliding_window: a query at position p sees keys p - sliding_window + 1 .. p (HF's convention).
    Returns [num_query_tokens, n_heads, head_dim].
    """
    _check_inputs(query, key_cache, value_cache, metadata)
    num_kv_heads, head_dim = key_cache.shape[2], key_cache.shape[3]
    n_heads = query.shape[1]
    n_rep = n_heads // num_kv_heads
    row_numel = metadata.block_size * num_kv_heads * head_dim
    key_rows = key_cache.reshape(metadata.num_blocks, row_numel)  # one row per block
    value_rows = value_cache.reshape(metadata.num_blocks, row_numel)
    most_rows = max(group.block_ids.numel() for group in metadata.groups)
    key_buf, value_buf = metadata.workspace(most_rows, row_numel, key_cache)
    out = torch.empty_like(query)
    for group in metadata.groups:
        rows = group.block_ids.numel()
        keys = torch.index_select(key_rows, 0, group.block_ids, out=key_buf[:rows])
        values = torch.index_select(value_rows, 0, group.block_ids, out=value_buf[:rows])
        # keys, values: [num_seqs, n_kv_heads, num_slots, head_dim] (views of the workspace)
        keys = keys.view(group.num_seqs, group.num_slots, num_kv_heads, head_dim).transpose(1, 2)
        values = values.view(group.num_seqs, group.num_slots, num_kv_heads, head_dim).transpose(1, 2)
        q = _fold_queries(query[group.query_start : group.query_end], group, num_kv_heads, n_rep)
        o = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=group.mask(sliding_window, n_rep), scale=scale
        )
        out[group.query_start : group.query_end] = _unfold_output(o, group, n_heads)
    return out


def _fold_queries(q: torch.Tensor, group: _Group, num_kv_heads: int, n_rep: int) -> torch.Tensor:
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


def _unfold_output(o: torch.Tensor, group: _Group, n_heads: int) -> torch.Tensor:
    """Inverse of `_fold_queries`: [num_seqs, n_kv_heads, n_rep * max_q, D] -> [group queries, n_heads, D]."""
    g, max_q, head_dim = group.num_seqs, group.max_query_len, o.shape[-1]
    n_kv_heads = o.shape[1]
    o = (
        o.view(g, n_kv_heads, -1, max_q, head_dim)
        .permute(0, 3, 1, 2, 4)
        .reshape(g * max_q, n_heads, head_dim)
    )
    return o if group.query_index is None else o.index_select(0, group.query_index)


def _group_end(
    contexts: list[int], queries: list[int], start: int, block_size: int, slot_bytes: int, budget: int
) -> int:
    """End (exclusive) of the group starting at `start`: same decode-ness, gathered K/V within budget."""
    is_decode = queries[start] == 1
    most_blocks = 0
    end = start
    while end < len(contexts) and (queries[end] == 1) == is_decode:
        blocks = max(most_blocks, -(-contexts[end] // block_size))
        if end > start and (end - start + 1) * blocks * block_size * slot_bytes > budget:
            break
        most_blocks = blocks
        end += 1
    return end


def _make_group(
    tables: list[list[int]],
    contexts: list[int],
    queries: list[int],
    start: int,
    end: int,
    query_start: int,
    block_size: int,
    device: torch.device,
) -> _Group:
    blocks = max(-(-contexts[i] // block_size) for i in range(start, end))
    max_q = max(queries[start:end])
    block_ids: list[int] = []
    query_pos: list[list[int]] = []
    query_index: list[int] = []
    for row, i in enumerate(range(start, end)):
        used = tables[i][: -(-contexts[i] // block_size)]
        block_ids += used + [used[0]] * (blocks - len(used))  # padding blocks are masked out
        first = contexts[i] - queries[i]
        query_pos.append([min(first + j, contexts[i] - 1) for j in range(max_q)])
        query_index += range(row * max_q, row * max_q + queries[i])
    padded = len(query_index) != (end - start) * max_q

    def as_tensor(values: list) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    return _Group(
        query_start=query_start,
        query_end=query_start + len(query_index),
        num_seqs=end - start,
        max_query_len=max_q,
        num_slots=blocks * block_size,
        block_ids=as_tensor(block_ids),
        query_index=as_tensor(query_index) if padded else None,
        query_pos=as_tensor(query_pos),
        unmasked=max_q == 1 and all(contexts[i] == blocks * block_size for i in range(start, end)),
    )


def _validate(
    tables: list[list[int]], contexts: list[int], queries: list[int], num_blocks: int, block_size: int
) -> None:
    if not contexts:
        raise InvalidArgument("paged attention needs at least one sequence, got an empty batch")
    if not len(tables) == len(contexts) == len(queries):
        raise InvalidArgument(
            f"batch sizes disagree: {len(tables)} block tables, {len(contexts)} context lengths, "
            f"{len(queries)} query lengths"
        )
    for i, (table, context, query) in enumerate(zip(tables, contexts, queries, strict=True)):
        if not 1 <= query <= context:
            raise InvalidArgument(
                f"sequence {i}: need 1 <= query_len <= context_len, "
                f"got query_len={query} context_len={context}"
            )
        needed = -(-context // block_size)
        if len(table) < needed:
            raise InvalidArgument(
                f"sequence {i}: {context} tokens need {needed} blocks of {block_size}, "
                f"its block table has {len(table)}"
            )
        for block_id in table[:needed]:
            if not 0 <= block_id < num_blocks:
                raise BlockOutOfRange(
                    f"sequence {i}: block table entry {block_id} is outside the pool of {num_blocks} blocks"
                )


def _check_inputs(
    query: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, metadata: AttentionMetadata
) -> None:
    if key_cache.dim() != 4 or key_cache.shape != value_cache.shape:
        raise CacheMismatch(
            f"key/value caches must both be [num_blocks, block_size, n_kv_heads, head_dim], got "
            f"{tuple(key_cache.shape)} and {tuple(value_cache.shape)}"
        )
    if tuple(key_cache.shape[:2]) != (metadata.num_blocks, metadata.block_size):
        raise CacheMismatch(
            f"the metadata was built for {metadata.num_blocks} blocks of {metadata.block_size}, "
            f"the cache has {key_cache.shape[0]} blocks of {key_cache.shape[1]}"
        )
    num_kv_heads, head_dim = key_cache.shape[2], key_cache.shape[3]
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


def _as_lists(block_tables: Sequence[Sequence[int]] | torch.Tensor) -> list[list[int]]:
    if isinstance(block_tables, torch.Tensor):
        if block_tables.dim() != 2 or block_tables.is_floating_point():
            raise InvalidArgument(
                "block_tables must be an integer [batch, max_blocks] tensor, "
                f"got {tuple(block_tables.shape)} {block_tables.dtype}"
            )
        return block_tables.tolist()
    return [list(table) for table in block_tables]


def _as_ints(values: Sequence[int] | torch.Tensor) -> list[int]:
    return values.tolist() if isinstance(values, torch.Tensor) else [int(v) for v in values]
