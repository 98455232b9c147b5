"""Batch planning for paged attention: who attends to which blocks, worked out once per engine step.

`AttentionMetadata.build` turns block tables and lengths into everything the per-layer attention
call needs that does not depend on the numbers in the cache: groups of consecutive sequences (all
decode or all prefill) whose padded K/V fit a workspace, the (sequence, KV head, block) tile rows to
gather, decode chunks sized to stay in cache, masks, and the decode batch of the Numba kernel.

Invariant: the metadata is validated against the pool's geometry when it is built (every block id
of every table inside the pool, every table long enough for its length), so the layers that reuse it
only check tensor shapes. Nothing here reads or writes K/V: compute is `pagedkv.tensors.attention`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate

import torch

from pagedkv.errors import InvalidArgument
from pagedkv.tensors.errors import BlockOutOfRange, CacheMismatch

WORKSPACE_BYTES = 16 * 2**20
"""Budget for the padded K and V of one group: prefill gathers a group whole into a workspace of this
size; decode groups use it to bound padding. (Chosen when decode also gathered whole groups: on a
2-core CPU, groups of 8-32 MiB ran ~2x faster than gathering the whole batch.)"""

DECODE_CHUNK_BYTES_PER_THREAD = 2**20
"""K (then V) tiles gathered per decode chunk, per intra-op thread (a chunk is split across threads):
half of a 2 MiB per-core L2, so a chunk stays in cache between the gather and the matmul, and large
enough that per-op overhead stays small. Measured (benchmarks/bench_attention.py, 2-core CPU, 1-4k
tokens): on 1 thread 1 MiB beat 2 MiB (1.5-1.7x vs 1.8-2.1x contiguous); on 2 threads 2 MiB in all
matched or beat 1 MiB, and 0.5 MiB was much worse (~2.4x)."""


@dataclass(frozen=True)
class DecodeChunk:
    """Decode work unit: pairs [pairs.start, pairs.stop) of a group over token slots `slots`."""

    pairs: slice
    slots: slice
    tiles: torch.Tensor  # [num pairs * blocks] long: rows of the tile view, pair-major


@dataclass
class BatchGroup:
    """Consecutive sequences attended together; all decode (one query each) or all prefill."""

    query_start: int  # rows [query_start, query_end) of the packed query belong to this group
    query_end: int
    num_seqs: int
    max_query_len: int
    num_slots: int  # padded KV length: blocks per sequence * block_size
    tiles: torch.Tensor  # [num_seqs * n_kv_heads * blocks] long: (sequence, head, block) tile rows
    query_index: torch.Tensor | None  # row of each real query in [num_seqs * max_query_len]; None: no padding
    query_pos: torch.Tensor  # [num_seqs, max_query_len] long: position of each query, clamped to len - 1
    unmasked: bool  # decode over exactly `num_slots` keys each: nothing to mask
    chunks: list[DecodeChunk]  # decode groups only; empty for prefill
    masks: dict[tuple[int | None, int], torch.Tensor | None] = field(default_factory=dict)

    def mask(self, sliding_window: int | None, n_rep: int) -> torch.Tensor | None:
        """Prefill: [num_seqs, 1, n_rep * max_query_len, num_slots] bool (True = attend); None: all True."""
        key = (sliding_window, n_rep)
        if key not in self.masks:
            allowed = self._allowed(sliding_window)
            self.masks[key] = None if allowed is None else allowed.repeat(1, n_rep, 1).unsqueeze(1)
        return self.masks[key]

    def excluded(self, sliding_window: int | None) -> torch.Tensor | None:
        """Decode: [num_seqs, 1, 1, num_slots] bool (True = masked out), or None if nothing is."""
        key = (sliding_window, 0)
        if key not in self.masks:
            allowed = self._allowed(sliding_window)
            self.masks[key] = None if allowed is None else allowed.logical_not().unsqueeze(1)
        return self.masks[key]

    def _allowed(self, sliding_window: int | None) -> torch.Tensor | None:
        """[num_seqs, max_query_len, num_slots] bool: causal, within the length and the window."""
        if self.unmasked and (sliding_window is None or sliding_window >= self.num_slots):
            return None
        key_pos = torch.arange(self.num_slots, device=self.query_pos.device)
        query_pos = self.query_pos.unsqueeze(-1)  # [num_seqs, max_q, 1]
        allowed = key_pos <= query_pos  # causal; query_pos <= len - 1 also hides the padding
        if sliding_window is not None:
            allowed &= key_pos > query_pos - sliding_window
        return allowed


@dataclass(frozen=True)
class DecodeBatch:
    """Every decode sequence of the step (query_len 1), for the kernel that reads blocks in place:
    it needs no groups or chunks, so one call serves them all."""

    rows: torch.Tensor  # [seqs] long: the sequence's row of the packed query
    block_table: torch.Tensor  # [seqs, most blocks] long: used blocks, padded with the first one
    context_lens: torch.Tensor  # [seqs] long


class AttentionMetadata:
    """Per-step description of a batch for `paged_attention`: who attends to which blocks.

    Build it with `AttentionMetadata.build`; it validates the block tables against the pool once,
    so the per-layer calls only check tensor shapes.
    """

    def __init__(
        self,
        groups: list[BatchGroup],
        num_query_tokens: int,
        cache_shape: tuple[int, int, int, int],
        decode_batch: DecodeBatch | None = None,
    ) -> None:
        self.groups = groups
        self.decode_batch = decode_batch  # None: no decode sequence in the step
        self.num_query_tokens = num_query_tokens
        self.cache_shape = cache_shape  # [num_blocks, n_kv_heads, block_size, head_dim]
        self.num_blocks, _, self.block_size, _ = cache_shape
        # rows of the gather workspace: a whole prefill group, or the largest decode chunk
        self.workspace_rows = max(
            max((chunk.tiles.numel() for chunk in group.chunks), default=group.tiles.numel())
            for group in groups
        )
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
        decode_chunk_bytes: int | None = None,
    ) -> AttentionMetadata:
        """Describe a batch.

        block_tables[i]: block ids of sequence i (a padded [batch, max_blocks] tensor is fine; only
        the first ceil(context_lens[i] / block_size) entries are read). context_lens[i]: tokens of
        K/V sequence i attends over, its own queries included. query_lens[i]: how many of its last
        tokens are queries (None: 1 each, i.e. decode). key_cache gives the pool's geometry:
        [num_blocks, n_kv_heads, block_size, head_dim]. decode_chunk_bytes: K tiles per decode
        chunk (default: DECODE_CHUNK_BYTES_PER_THREAD times torch's intra-op threads now).
        """
        if decode_chunk_bytes is None:
            decode_chunk_bytes = DECODE_CHUNK_BYTES_PER_THREAD * torch.get_num_threads()
        if decode_chunk_bytes <= 0:
            raise InvalidArgument(f"decode_chunk_bytes must be positive, got {decode_chunk_bytes}")
        tables = _as_lists(block_tables)
        contexts = _as_ints(context_lens)
        queries = [1] * len(contexts) if query_lens is None else _as_ints(query_lens)
        if key_cache.dim() != 4:
            raise CacheMismatch(
                "key_cache must be [num_blocks, n_kv_heads, block_size, head_dim], "
                f"got {tuple(key_cache.shape)}"
            )
        num_blocks, num_kv_heads, block_size, head_dim = key_cache.shape
        _validate(tables, contexts, queries, num_blocks, block_size)
        geometry = _Geometry(num_kv_heads, block_size, head_dim, key_cache.element_size(), key_cache.device)
        groups: list[BatchGroup] = []
        start = query_start = 0
        while start < len(contexts):
            end = _group_end(contexts, queries, start, geometry, workspace_bytes)
            group = _make_group(
                tables, contexts, queries, start, end, query_start, geometry, decode_chunk_bytes
            )
            groups.append(group)
            query_start = group.query_end
            start = end
        decode_batch = _make_decode_batch(tables, contexts, queries, block_size, key_cache.device)
        return cls(groups, query_start, (num_blocks, num_kv_heads, block_size, head_dim), decode_batch)

    def workspace(self, row_numel: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reusable gather buffers ([workspace_rows, row_numel], K and V): made once, shared by all layers."""
        buffers = self._workspace
        shape = (self.workspace_rows, row_numel)
        if buffers is None or buffers[0].dtype != like.dtype or buffers[0].device != like.device:
            buffers = (like.new_empty(shape), like.new_empty(shape))
        self._workspace = buffers
        return buffers


@dataclass(frozen=True)
class _Geometry:
    """What the batch plan needs to know about the pool."""

    num_kv_heads: int
    block_size: int
    head_dim: int
    element_size: int
    device: torch.device

    @property
    def tile_bytes(self) -> int:
        """One (block, KV head) tile of K or of V."""
        return self.block_size * self.head_dim * self.element_size

    @property
    def slot_bytes(self) -> int:
        """K and V of one token."""
        return 2 * self.num_kv_heads * self.head_dim * self.element_size


def _group_end(contexts: list[int], queries: list[int], start: int, geometry: _Geometry, budget: int) -> int:
    """End (exclusive) of the group starting at `start`: same decode-ness, padded K/V within budget."""
    is_decode = queries[start] == 1
    most_blocks = 0
    end = start
    while end < len(contexts) and (queries[end] == 1) == is_decode:
        blocks = max(most_blocks, -(-contexts[end] // geometry.block_size))
        if end > start and (end - start + 1) * blocks * geometry.block_size * geometry.slot_bytes > budget:
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
    geometry: _Geometry,
    decode_chunk_bytes: int,
) -> BatchGroup:
    block_size = geometry.block_size
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
        return torch.tensor(values, dtype=torch.long, device=geometry.device)

    # tile row of (sequence s, KV head h, block j) = block_ids[s, j] * n_kv_heads + h
    heads = torch.arange(geometry.num_kv_heads, device=geometry.device).view(1, -1, 1)
    tiles = (as_tensor(block_ids).view(end - start, 1, blocks) * geometry.num_kv_heads + heads).reshape(-1)
    return BatchGroup(
        query_start=query_start,
        query_end=query_start + len(query_index),
        num_seqs=end - start,
        max_query_len=max_q,
        num_slots=blocks * block_size,
        tiles=tiles,
        query_index=as_tensor(query_index) if padded else None,
        query_pos=as_tensor(query_pos),
        unmasked=max_q == 1 and all(contexts[i] == blocks * block_size for i in range(start, end)),
        chunks=_decode_chunks(tiles, blocks, geometry, decode_chunk_bytes) if max_q == 1 else [],
    )


def _make_decode_batch(
    tables: list[list[int]], contexts: list[int], queries: list[int], block_size: int, device: torch.device
) -> DecodeBatch | None:
    decode = [i for i, query in enumerate(queries) if query == 1]
    if not decode:
        return None
    rows = list(accumulate(queries, initial=0))  # rows[i]: first query row of sequence i
    used = [tables[i][: -(-contexts[i] // block_size)] for i in decode]
    width = max(len(table) for table in used)
    padded = [table + [table[0]] * (width - len(table)) for table in used]  # never read: past the length

    def as_tensor(values: list) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    return DecodeBatch(
        rows=as_tensor([rows[i] for i in decode]),
        block_table=as_tensor(padded),
        context_lens=as_tensor([contexts[i] for i in decode]),
    )


def _decode_chunks(
    tiles: torch.Tensor, blocks: int, geometry: _Geometry, chunk_bytes: int
) -> list[DecodeChunk]:
    """Tile a decode group's [pairs, blocks] grid of K tiles into chunks of at most `chunk_bytes`.

    Whole pairs when two fit (the usual case: several pairs per chunk); otherwise `threads` pairs at
    a time, split along their blocks. A chunk keeps at least one pair per thread because `bmm`
    splits its batch across threads: a one-pair P @ V ran ~2.5x slower on 2 threads. Every chunk
    holds at least one tile.
    """
    per_pair = tiles.view(-1, blocks)  # [pairs, blocks]
    pairs, block_size = per_pair.shape[0], geometry.block_size
    pair_bytes = blocks * geometry.tile_bytes
    threads = torch.get_num_threads()
    if threads * pair_bytes <= chunk_bytes:
        pairs_per, blocks_per = chunk_bytes // pair_bytes, blocks
    else:
        pairs_per = min(pairs, threads)
        blocks_per = max(1, min(blocks, chunk_bytes // (pairs_per * geometry.tile_bytes)))
    return [
        DecodeChunk(
            slice(p, min(p + pairs_per, pairs)),
            slice(b * block_size, min(b + blocks_per, blocks) * block_size),
            per_pair[p : p + pairs_per, b : b + blocks_per].reshape(-1),
        )
        for p in range(0, pairs, pairs_per)
        for b in range(0, blocks, blocks_per)
    ]


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
