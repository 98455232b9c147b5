"""A reference model of the BlockManager contract, and helpers that observe a manager from outside.

The contract pins down more than counts: the free list starts as ``[0, 1, ..., num_blocks - 1]``, allocation
pops its head, ``free`` releases a sequence's blocks last-block-first (vLLM V1's order: a block that holds a
full block of known token ids -- one a prefix lookup could find -- joins the tail, every other block, and
every block without prefix caching, joins the head, in that same last-first order), a write into a shared
partially filled block copies it, and (with prefix caching) a cached-free block is evicted when it is popped
for new content. So the model keeps exactly that state -- an ordered free list, ref counts, block tables and
the prefix-cache map -- and the tests can demand the implementation's exact block ids, not just totals.

It is written for obviousness, not speed: a prefix-cache key is the whole token prefix a full block ends
(a tuple), which is what a chained hash stands for, minus the collisions.

Two things the contract leaves open are handled explicitly rather than guessed:
- whether a block filled by ``append`` with token ids gets a hash (eagerly, when freed, or never). A model
  with ``exact_hits=True`` refuses id appends under prefix caching; with ``exact_hits=False`` it does not
  predict hits at all, it *checks* the blocks the implementation reused (their content must match the
  prompt) and then follows the implementation's choice.
- the free-list order after ``reset_prefix_cache``; see ``adopt_free_order``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

from pagedkv import BlockManager


class NoRoom(Exception):
    """The model's OutOfBlocks: the request does not fit, and the model changed nothing."""


Tokens = list[int] | int


class Reference:
    """Slow, obvious model of a BlockManager (see the module docstring)."""

    def __init__(
        self,
        num_blocks: int,
        block_size: int,
        enable_prefix_caching: bool = False,
        watermark: float = 0.0,
        exact_hits: bool = True,
    ) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.caching = enable_prefix_caching
        self.exact_hits = exact_hits
        self.watermark_blocks = int(watermark * num_blocks)
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.ref = [0] * num_blocks
        self.tables: dict[Hashable, list[int]] = {}
        self.lengths: dict[Hashable, int] = {}
        # The leading token ids of each sequence that are known (a count append makes the rest unknown).
        self.known: dict[Hashable, list[int]] = {}
        # content[b]: the token prefix that full block b ends, when every token of it is known; else None.
        self.content: list[tuple[int, ...] | None] = [None] * num_blocks
        # The prefix-cache map (exact mode only): key -> block, and its inverse.
        self.cached: dict[tuple[int, ...], int] = {}
        self.key_of: dict[int, tuple[int, ...]] = {}
        self.queried_tokens = 0
        self.hit_tokens = 0
        self.evicted_blocks = 0
        self.cow_copies = 0

    # ------------------------------------------------------------------ helpers
    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    @property
    def num_cached_free_blocks(self) -> int:
        return sum(1 for b in self.free if b in self.key_of)

    @property
    def num_held_blocks(self) -> int:
        return self.num_blocks - len(self.free)

    def free_order(self) -> list[int]:
        return list(self.free)

    def _pop(self) -> int:
        block, _ = self.free.popitem(last=False)
        key = self.key_of.pop(block, None)
        if key is not None:
            del self.cached[key]
            self.evicted_blocks += 1
        self.content[block] = None
        self.ref[block] = 1
        return block

    def _refresh_content(self, seq_id: Hashable, start: int) -> None:
        """Recompute content[] of the blocks of seq_id from logical index start on."""
        table, n = self.tables[seq_id], self.lengths[seq_id]
        known = self.known.get(seq_id, ())
        for i in range(start, len(table)):
            end = (i + 1) * self.block_size
            self.content[table[i]] = tuple(known[:end]) if end <= n and end <= len(known) else None

    def _lookup(self, ids: list[int]) -> list[int]:
        hits = []
        for i in range(len(ids) // self.block_size):
            block = self.cached.get(tuple(ids[: (i + 1) * self.block_size]))
            if block is None:
                break
            hits.append(block)
        return hits

    def _fits(self, hits: Sequence[int], num_tokens: int) -> bool:
        claimed_free = sum(1 for b in hits if self.ref[b] == 0)
        new = self.blocks_for(num_tokens) - len(hits)
        return len(self.free) - claimed_free - new >= self.watermark_blocks

    def check_hits_sound(self, ids: list[int], hits: Sequence[int]) -> None:
        """Every reused block must hold exactly the prompt's tokens up to its end (no stale hash)."""
        assert len(hits) <= len(ids) // self.block_size, (
            f"hit {len(hits)} blocks of a {len(ids)}-token prompt"
        )
        assert len(set(hits)) == len(hits), f"the same block reused twice in one prompt: {hits}"
        for i, block in enumerate(hits):
            expected = tuple(ids[: (i + 1) * self.block_size])
            assert self.content[block] == expected, (
                f"prefix hit on block {block} at logical {i}: "
                f"it holds {self.content[block]}, the prompt has {expected}"
            )

    def fits_without_hits(self, num_tokens: int) -> bool:
        """A hit never costs more than a fresh block, so this much room always suffices."""
        return len(self.free) - self.blocks_for(num_tokens) >= self.watermark_blocks

    # ------------------------------------------------------------------ the contract
    def can_allocate(self, tokens: Tokens) -> bool:
        assert self.exact_hits or not self.caching, "loose model cannot predict can_allocate"
        if isinstance(tokens, int):
            return self._fits([], tokens)
        hits = self._lookup(tokens) if self.caching else []
        return self._fits(hits, len(tokens))

    def allocate(self, seq_id: Hashable, tokens: Tokens, observed_hits: Sequence[int] | None = None) -> int:
        assert seq_id not in self.tables
        ids = tokens if isinstance(tokens, list) else None
        n = len(ids) if ids is not None else tokens
        hits: list[int] = []
        if ids is not None and self.caching:
            if self.exact_hits:
                hits = self._lookup(ids)
            else:
                assert observed_hits is not None, "loose model needs the implementation's hits"
                hits = list(observed_hits)
                self.check_hits_sound(ids, hits)
        if not self._fits(hits, n):
            raise NoRoom(f"{n} tokens with {len(hits)} hits")
        for block in hits:
            if self.ref[block] == 0:
                del self.free[block]
            self.ref[block] += 1
        table = hits + [self._pop() for _ in range(self.blocks_for(n) - len(hits))]
        self.tables[seq_id] = table
        self.lengths[seq_id] = n
        self.known[seq_id] = list(ids) if ids is not None else []
        self._refresh_content(seq_id, len(hits))
        if ids is not None and self.caching:
            self.queried_tokens += n
            self.hit_tokens += len(hits) * self.block_size
            if self.exact_hits:
                for i in range(len(hits), n // self.block_size):
                    key = tuple(ids[: (i + 1) * self.block_size])
                    assert key not in self.cached, f"duplicate cache key {key}: the model's assumption broke"
                    self.cached[key] = table[i]
                    self.key_of[table[i]] = key
        return len(hits) * self.block_size

    def _needs_copy(self, seq_id: Hashable) -> bool:
        n = self.lengths[seq_id]
        return n % self.block_size != 0 and self.ref[self.tables[seq_id][-1]] > 1

    def append(self, seq_id: Hashable, tokens: Tokens = 1) -> list[tuple[int, int]]:
        ids = tokens if isinstance(tokens, list) else None
        assert not (ids is not None and self.caching and self.exact_hits), (
            "the contract does not say when an appended full block is hashed; use exact_hits=False"
        )
        k = len(ids) if ids is not None else tokens
        table, n = self.tables[seq_id], self.lengths[seq_id]
        copy = self._needs_copy(seq_id)
        new = self.blocks_for(n + k) - len(table)
        if len(self.free) < copy + new:
            raise NoRoom(f"append {k} to {seq_id!r}")
        copies = []
        if copy:
            src = table[-1]
            self.ref[src] -= 1
            dst = self._pop()
            table[-1] = dst
            copies.append((src, dst))
            self.cow_copies += 1
        table.extend(self._pop() for _ in range(new))
        known = self.known[seq_id]
        if ids is not None and len(known) == n:
            known.extend(ids)
        self.lengths[seq_id] = n + k
        self._refresh_content(seq_id, n // self.block_size)
        return copies

    def append_batch(self, seq_ids: Sequence[Hashable], token_ids: list[int] | None = None) -> list[tuple]:
        """One token to each sequence, in order; all or nothing."""
        assert len(set(seq_ids)) == len(seq_ids)
        need = 0
        writers: dict[int, int] = {}
        for s in seq_ids:
            if self.lengths[s] % self.block_size == 0:
                need += 1
            elif self.ref[self.tables[s][-1]] > 1:
                writers[self.tables[s][-1]] = writers.get(self.tables[s][-1], 0) + 1
        need += sum(min(m, self.ref[b] - 1) for b, m in writers.items())
        if len(self.free) < need:
            raise NoRoom(f"append_batch needs {need} blocks")
        copies = []
        for i, s in enumerate(seq_ids):
            copies += self.append(s, [token_ids[i]] if token_ids is not None else 1)
        return copies

    def fork(self, parent_id: Hashable, child_id: Hashable) -> None:
        assert child_id not in self.tables
        table = list(self.tables[parent_id])
        for block in table:
            self.ref[block] += 1
        self.tables[child_id] = table
        self.lengths[child_id] = self.lengths[parent_id]
        self.known[child_id] = list(self.known[parent_id])

    def free_seq(self, seq_id: Hashable) -> None:
        to_head, to_tail = [], []
        for block in reversed(self.tables.pop(seq_id)):
            self.ref[block] -= 1
            if self.ref[block] == 0:
                cacheable = self.caching and self.content[block] is not None
                (to_tail if cacheable else to_head).append(block)
        self.free = OrderedDict.fromkeys([*to_head, *self.free, *to_tail])
        del self.lengths[seq_id]
        del self.known[seq_id]

    def reset_prefix_cache(self) -> bool:
        if self.tables:
            return False
        self.cached.clear()
        self.key_of.clear()
        self.content = [None] * self.num_blocks
        return True

    def adopt_free_order(self, order: list[int]) -> None:
        """Take the implementation's free-list order (observed by draining) where the contract is silent."""
        assert sorted(order) == sorted(self.free), (
            f"drained {sorted(order)}, free blocks are {sorted(self.free)}"
        )
        self.free = OrderedDict.fromkeys(order)

    def translate(self, seq_id: Hashable, pos: int) -> tuple[int, int]:
        return self.tables[seq_id][pos // self.block_size], pos % self.block_size


# ---------------------------------------------------------------------- observing a BlockManager
def stats_tuple(bm: BlockManager) -> tuple[int, int, int, int]:
    s = bm.stats
    return (s.queried_tokens, s.hit_tokens, s.evicted_blocks, s.cow_copies)


def observe(bm: BlockManager, seq_ids: Sequence[Hashable]) -> dict[str, Any]:
    """Everything the public API shows without changing anything."""
    return {
        "tables": {s: bm.block_table(s) for s in seq_ids},
        "num_tokens": {s: bm.num_tokens(s) for s in seq_ids},
        "member": {s: s in bm for s in seq_ids},
        "len": len(bm),
        "ref_counts": [bm.ref_count(b) for b in range(bm.num_blocks)],
        "num_free_blocks": bm.num_free_blocks,
        "num_cached_free_blocks": bm.num_cached_free_blocks,
        "usage": bm.usage,
        "stats": stats_tuple(bm),
    }


def drain_free_list(bm: BlockManager, host: Hashable | None = None) -> list[int]:
    """Pop every free block, head first, and return their ids: the free-list order seen from outside.

    Destructive. Uses a new sequence ``"__drain__"`` (one token), or appends to ``host`` when given (use that
    when a watermark stops a new allocation). Each append crosses exactly one block boundary, so it pops
    one block, plus the copy-on-write block first when the host's last block is shared and partial.
    """
    order: list[int] = []
    if host is None:
        if bm.num_free_blocks == 0:
            return order
        host = "__drain__"
        bm.allocate(host, 1)
        order.append(bm.block_table(host)[0])
    while bm.num_free_blocks > 0:
        n = bm.num_tokens(host)
        copies = bm.append(host, (bm.block_size - n % bm.block_size) % bm.block_size + 1)
        order.extend(dst for _, dst in copies)
        order.append(bm.block_table(host)[-1])
    return order


def assert_matches(bm: BlockManager, ref: Reference) -> None:
    """The manager shows exactly the reference's state (ids, ref counts, counts, stats)."""
    bm.check_invariants()
    seqs = list(ref.tables)
    assert len(bm) == len(seqs)
    for s in seqs:
        assert s in bm
        assert bm.block_table(s) == ref.tables[s], f"block_table({s!r})"
        assert bm.num_tokens(s) == ref.lengths[s], f"num_tokens({s!r})"
    assert [bm.ref_count(b) for b in range(bm.num_blocks)] == ref.ref
    assert bm.num_free_blocks == ref.num_free_blocks
    assert math.isclose(bm.usage, ref.num_held_blocks / ref.num_blocks, abs_tol=1e-12)
    s = bm.stats
    assert s.hit_tokens == ref.hit_tokens
    assert s.cow_copies == ref.cow_copies
    if ref.caching:
        assert s.queried_tokens == ref.queried_tokens
    if ref.exact_hits or not ref.caching:
        assert bm.num_cached_free_blocks == ref.num_cached_free_blocks
        assert s.evicted_blocks == ref.evicted_blocks
    else:
        assert 0 <= bm.num_cached_free_blocks <= bm.num_free_blocks
