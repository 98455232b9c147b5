"""A request that waits does not pay for its prompt's hashes again (issue 15).

A scheduler asks about the head of its queue at every step until it fits (``can_allocate``, then
``allocate``). The manager remembers the last few prompts' block hashes, which depend on the tokens only,
and re-walks the cache index with them: the hashes are counted through ``stats.hashed_blocks``, and the
hits must follow the cache as it is at each attempt (blocks published or evicted in between).

Block size 4; ``SYSTEM`` is three full blocks. Hash counts are exact: a lookup hashes the prompt's blocks up
to the first miss, and publishes the next block of a sequence whose chain it reaches, which costs a hash
only when that block's ids differ from the lookup's own block there (same parent, same ids: same hash).
"""

from __future__ import annotations

import pytest

from pagedkv import BlockManager, OutOfBlocks

B = 4
SYSTEM = list(range(12))


def cached(num_blocks: int) -> BlockManager:
    return BlockManager(num_blocks=num_blocks, block_size=B, enable_prefix_caching=True)


def new_content(tag: int, num_tokens: int) -> list[int]:
    return [1000 * tag + i for i in range(num_tokens)]


def test_a_request_refused_many_times_hashes_each_block_once() -> None:
    bm = cached(8)
    bm.allocate("a", SYSTEM)  # [0, 1, 2]: one hash, its first block (where its lookup missed)
    assert bm.stats.hashed_blocks == 1
    bm.allocate("filler", 16)  # [3, 4, 5, 6]; one block free
    prompt = SYSTEM + new_content(1, 12)  # hits a's three blocks, then needs three new ones
    assert not bm.can_allocate(prompt)
    # the prompt's first four blocks (three hits, one miss); a's blocks 1 and 2, published on the way,
    # hold the same ids as the prompt's, so they take its hashes
    assert bm.stats.hashed_blocks == 1 + 4
    for _ in range(10):
        assert not bm.can_allocate(prompt)
        with pytest.raises(OutOfBlocks):
            bm.allocate("r", prompt)
    assert bm.stats.hashed_blocks == 5
    bm.free("filler")  # [6, 5, 4, 3, 7]: count-allocated blocks go back to the head
    assert bm.allocate("r", prompt) == 12
    assert bm.block_table("r") == [0, 1, 2, 6, 5, 4]
    assert bm.stats.hashed_blocks == 5  # its miss block is published with the remembered hash
    bm.check_invariants()

    twin = cached(8)  # the same calls without the refusals
    twin.allocate("a", SYSTEM)
    twin.allocate("r", prompt)
    assert twin.stats.hashed_blocks == 5


def test_a_retry_finds_blocks_published_since_and_hashes_only_the_new_one() -> None:
    bm = cached(10)
    extra = new_content(1, 12)
    bm.allocate("a", SYSTEM)  # [0, 1, 2]
    bm.allocate("filler", 24)  # [3 .. 8]; block 9 free
    prompt = SYSTEM + extra  # six blocks, three of them cached
    assert not bm.can_allocate(prompt)
    assert bm.stats.hashed_blocks == 5
    assert bm.allocate("b", SYSTEM + extra[:4]) == 12  # its own four hashes; publishes extra[:4] in block 9
    assert bm.block_table("b") == [0, 1, 2, 9]
    assert bm.stats.hashed_blocks == 9
    assert not bm.can_allocate(prompt)  # four blocks cached now, two new ones needed, none free
    assert bm.stats.hashed_blocks == 10  # only block 4's hash is new: block 3's was remembered
    bm.free("filler")
    assert bm.allocate("r", prompt) == 16
    assert bm.block_table("r")[:4] == [0, 1, 2, 9]
    assert bm.stats.hashed_blocks == 10
    bm.check_invariants()


def test_a_retry_does_not_hit_blocks_evicted_since() -> None:
    bm = cached(6)
    bm.allocate("a", SYSTEM)  # [0, 1, 2]
    bm.allocate("filler", 8)  # [3, 4]; block 5 free
    prompt = SYSTEM + new_content(1, 12)
    assert not bm.can_allocate(prompt)
    assert bm.stats.hashed_blocks == 5
    bm.free("a")  # a's blocks stay cached: [5, 2, 1, 0]
    assert not bm.can_allocate(prompt)  # reviving three cached blocks and taking three new ones: 6 > 4
    bm.allocate("y", 8)  # pops 5 and 2: a's last block is evicted
    assert bm.stats.evicted_blocks == 1
    bm.free("y")
    bm.free("filler")  # [4, 3, 2, 5, 1, 0]
    assert bm.allocate("r", prompt) == 8  # the hit stops where the eviction cut the chain
    assert bm.block_table("r") == [0, 1, 4, 3, 2, 5]
    assert bm.stats.hashed_blocks == 5
    bm.check_invariants()


def test_a_prompt_changed_in_place_is_looked_up_again() -> None:
    bm = cached(4)
    bm.allocate("a", list(range(8)))  # [0, 1]
    bm.allocate("filler", 8)  # [2, 3]: the pool is full
    prompt = [*range(8), 9]
    assert not bm.can_allocate(prompt)  # would hit both of a's blocks
    prompt[5] = 99  # the caller edits its own list: the second block differs now
    bm.free("filler")
    assert bm.allocate("b", prompt) == 4
    assert bm.block_table("b") == [0, 3, 2]
    bm.check_invariants()


def test_unrelated_prompts_cost_one_hash_each() -> None:
    bm = cached(32)
    for tag in range(4):
        bm.allocate(tag, new_content(tag, 5 * B + 1))
    assert bm.stats.hashed_blocks == 4
    assert BlockManager(32, B).stats.hashed_blocks == 0


def test_a_continuation_holding_other_ids_is_hashed_on_its_own() -> None:
    bm = cached(8)
    head, x, y = SYSTEM[:4], new_content(1, 4), new_content(2, 4)
    bm.allocate("a", head + x)  # one hash: its first block
    bm.allocate("b", head + y)  # its two blocks, and a's second block (ids x, not y): one more
    assert bm.stats.hashed_blocks == 1 + 2 + 1
    assert bm.allocate("c", head + x) == 8  # a's second block was published under its own hash
    assert bm.stats.hashed_blocks == 4 + 2
    bm.check_invariants()


def test_a_retry_finds_a_block_filled_since_by_appends() -> None:
    bm = cached(6)
    bm.allocate("a", SYSTEM[:6])  # [0, 1]; block 1 holds two tokens
    bm.allocate("filler", 16)  # [2, 3, 4, 5]: the pool is full
    prompt = SYSTEM[:8] + new_content(1, 4)
    assert not bm.can_allocate(prompt)  # hits block 0 only: a's block 1 is not full yet
    bm.append("a", [6])
    bm.append("a", [7])  # a's block 1 is full now, with the prompt's second block
    bm.free("filler")
    assert bm.allocate("r", prompt) == 8  # as if a's block had been hashed the moment it filled
    assert bm.block_table("r") == [0, 1, 5]
    bm.check_invariants()


def test_cached_prefix_changes_nothing_and_its_hashes_serve_the_allocation() -> None:
    bm = cached(8)
    bm.allocate("a", SYSTEM)  # [0, 1, 2]
    prompt = SYSTEM[:8] + new_content(1, 6)
    free_before = bm.free_block_ids()
    assert bm.cached_prefix(prompt) == 8
    assert bm.free_block_ids() == free_before and len(bm) == 1
    hashed = bm.stats.hashed_blocks
    assert bm.can_allocate(prompt)
    assert bm.allocate("b", prompt) == 8
    assert bm.stats.hashed_blocks == hashed  # cached_prefix's lookup was remembered
    assert BlockManager(8, B).cached_prefix(prompt) == 0
    bm.check_invariants()
