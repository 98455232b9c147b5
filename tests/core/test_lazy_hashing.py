"""Lazy prefix hashing must behave exactly like hashing every block the moment it fills.

`EagerReference` is the textbook scheme (vLLM's): a block is indexed by its full prefix the
moment it is full, and drops out of the index when it is reused; a freed block with an index key
joins the free-list tail, one without (a partly filled last block) the head. Random operations
drive both; after every one, return values, block tables, reference counts and the free-list
order must agree. Refused prompts are asked about again later (the same list, as a scheduler
retries the head of its queue), so remembered lookups are checked against a cache that changed
in between. Prompts use a two-letter alphabet so prefixes collide constantly; generated tokens
are unique, so no two blocks ever hold the same prefix (then "which duplicate is used" is not a
question and block ids can be compared exactly).
"""

from __future__ import annotations

import itertools
import random

import pytest

from pagedkv import BlockManager, OutOfBlocks


class EagerReference:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.size = block_size
        self.free = list(range(num_blocks))
        self.ref = [0] * num_blocks
        self.index: dict[tuple[int, ...], int] = {}
        self.key_of: dict[int, tuple[int, ...]] = {}
        self.seqs: dict[int, tuple[list[int], list[int]]] = {}

    def _pop(self) -> int:
        block = self.free.pop(0)
        if block in self.key_of:
            del self.index[self.key_of.pop(block)]
        self.ref[block] = 1
        return block

    def _index_full_blocks(self, table: list[int], tokens: list[int]) -> None:
        for i in range(len(tokens) // self.size):
            key = tuple(tokens[: (i + 1) * self.size])
            if table[i] not in self.key_of:
                assert key not in self.index, "duplicate contents: the test's premise is broken"
                self.index[key] = table[i]
                self.key_of[table[i]] = key

    def _hits(self, tokens: list[int]) -> list[int]:
        hits = []
        for i in range(len(tokens) // self.size):
            block = self.index.get(tuple(tokens[: (i + 1) * self.size]))
            if block is None:
                break
            hits.append(block)
        return hits

    def fits(self, tokens: list[int]) -> bool:
        hits = self._hits(tokens)
        total = -(-len(tokens) // self.size)
        return total - len(hits) + sum(self.ref[b] == 0 for b in hits) <= len(self.free)

    def allocate(self, seq_id: int, tokens: list[int]) -> int | None:
        if not self.fits(tokens):
            return None
        hits = self._hits(tokens)
        total = -(-len(tokens) // self.size)
        for block in hits:
            if self.ref[block] == 0:
                self.free.remove(block)
            self.ref[block] += 1
        table = hits + [self._pop() for _ in range(total - len(hits))]
        self.seqs[seq_id] = (table, list(tokens))
        self._index_full_blocks(table, tokens)
        return len(hits) * self.size

    def append(self, seq_id: int, token: int) -> list[tuple[int, int]] | None:
        table, tokens = self.seqs[seq_id]
        n = len(tokens)
        cow = n % self.size != 0 and self.ref[table[-1]] > 1
        if (n % self.size == 0 or cow) and not self.free:
            return None
        copies = []
        if cow:
            dst = self._pop()
            self.ref[table[-1]] -= 1
            copies.append((table[-1], dst))
            table[-1] = dst
        elif n % self.size == 0:
            table.append(self._pop())
        tokens.append(token)
        self._index_full_blocks(table, tokens)
        return copies

    def fork(self, parent: int, child: int) -> None:
        table, tokens = self.seqs[parent]
        for block in table:
            self.ref[block] += 1
        self.seqs[child] = (list(table), list(tokens))

    def free_seq(self, seq_id: int) -> None:
        table, _ = self.seqs.pop(seq_id)
        to_head, to_tail = [], []
        for block in reversed(table):
            self.ref[block] -= 1
            if self.ref[block] == 0:
                (to_tail if block in self.key_of else to_head).append(block)
        self.free = [*to_head, *self.free, *to_tail]


def _agree(bm: BlockManager, ref: EagerReference) -> None:
    assert bm.free_block_ids() == ref.free
    assert [bm.ref_count(b) for b in range(bm.num_blocks)] == ref.ref
    for seq_id, (table, _) in ref.seqs.items():
        assert bm.block_table(seq_id) == table


@pytest.mark.parametrize("seed", range(30))
def test_lazy_hashing_matches_eager_hashing(seed: int) -> None:
    rng = random.Random(seed)
    block_size, num_blocks = rng.choice([(2, 16), (3, 20), (4, 24)])
    bm = BlockManager(num_blocks, block_size, enable_prefix_caching=True)
    ref = EagerReference(num_blocks, block_size)
    unique_tokens = itertools.count(1000)
    next_id = itertools.count()
    refused: list[list[int]] = []  # prompts asked about again later, as a scheduler retries its queue
    for _ in range(400):
        live = list(ref.seqs)
        op = rng.random()
        if op < 0.35 or not live:
            if refused and rng.random() < 0.5:
                prompt = refused.pop(rng.randrange(len(refused)))
            else:
                prompt = [rng.randint(0, 1) for _ in range(rng.randint(1, 4 * block_size))]
            seq_id = next(next_id)
            expected = ref.allocate(seq_id, prompt)
            assert bm.can_allocate(prompt) is (expected is not None)
            if expected is None:
                with pytest.raises(OutOfBlocks):
                    bm.allocate(seq_id, prompt)
                refused.append(prompt)
            else:
                assert bm.allocate(seq_id, prompt) == expected
        elif op < 0.45 and refused:
            prompt = rng.choice(refused)
            assert bm.can_allocate(prompt) is ref.fits(prompt)
        elif op < 0.75:
            seq_id, token = rng.choice(live), next(unique_tokens)
            expected = ref.append(seq_id, token)
            if expected is None:
                with pytest.raises(OutOfBlocks):
                    bm.append(seq_id, [token])
            else:
                assert bm.append(seq_id, [token]) == expected
        elif op < 0.85:
            child = next(next_id)
            parent = rng.choice(live)
            ref.fork(parent, child)
            bm.fork(parent, child)
        else:
            seq_id = rng.choice(live)
            ref.free_seq(seq_id)
            bm.free(seq_id)
        _agree(bm, ref)
        bm.check_invariants()
    stats = bm.stats
    assert stats.hit_tokens > 0 and stats.evicted_blocks > 0, stats
