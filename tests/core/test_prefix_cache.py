"""Prefix caching: longest-prefix hits, cached-free blocks, LRU eviction (tail-first freeing), stale hashes.

Block size 4 throughout, so ``list(range(8))`` is two full blocks. Ids are exact: a freed block that a lookup
could find (full, known token ids) goes to the free-list tail, a sequence's last block first, and keeps its
hash until it is popped for new content; any other freed block (partly filled, or contents given as a count)
goes to the head, to be reused first (vLLM V1's order). So which block is evicted when follows from the
contract.
"""

from __future__ import annotations

import gc

import pytest
from reference import drain_free_list, observe, stats_tuple

from pagedkv import BlockManager, OutOfBlocks
from pagedkv.sequence import Sequence

B = 4


def cached(num_blocks: int, watermark: float = 0.0) -> BlockManager:
    return BlockManager(num_blocks=num_blocks, block_size=B, enable_prefix_caching=True, watermark=watermark)


def new_content(tag: int, num_tokens: int) -> list[int]:
    """Token ids no other prompt in these tests uses."""
    return [1000 * tag + i for i in range(num_tokens)]


# ------------------------------------------------------------------ what hits
def test_longest_cached_prefix_of_full_blocks_is_reused() -> None:
    bm = cached(8)
    assert bm.allocate("a", list(range(10))) == 0
    assert bm.block_table("a") == [0, 1, 2]
    assert bm.allocate("b", list(range(10))) == 8  # two full blocks; the partial third never hits
    assert bm.block_table("b") == [0, 1, 3]
    assert [bm.ref_count(b) for b in range(4)] == [2, 2, 1, 1]
    assert bm.num_free_blocks == 4
    s = bm.stats
    assert (s.queried_tokens, s.hit_tokens) == (20, 8)
    bm.check_invariants()


def test_prompt_ending_on_a_block_boundary_hits_every_block() -> None:
    bm = cached(8)
    bm.allocate("a", list(range(8)))
    assert bm.allocate("b", list(range(8))) == 8
    assert bm.block_table("b") == [0, 1]
    assert bm.num_free_blocks == 6
    assert bm.append("b") == []  # the shared last block is full: a new block, no copy
    assert bm.block_table("b") == [0, 1, 2]
    assert bm.stats.cow_copies == 0


def test_a_partial_last_block_never_hits() -> None:
    bm = cached(8)
    bm.allocate("a", list(range(6)))  # [0, 1]; block 1 holds 2 tokens
    assert bm.allocate("b", list(range(6))) == 4
    assert bm.block_table("b") == [0, 2]
    assert bm.allocate("c", list(range(3))) == 0  # shorter than one block
    assert bm.block_table("c") == [3]


def test_the_hit_stops_at_the_first_differing_block() -> None:
    bm = cached(8)
    bm.allocate("a", list(range(12)))
    assert bm.allocate("b", [0, 1, 2, 3, 9, 9, 9, 9, 8, 9, 10, 11]) == 4
    assert bm.block_table("b") == [0, 3, 4]


def test_a_block_hash_chains_its_parent() -> None:
    bm = cached(8)
    bm.allocate("a", [1, 2, 3, 4, 5, 6, 7, 8])
    # the second block has the same tokens, but follows a different first block: no hit
    assert bm.allocate("b", [0, 0, 0, 0, 5, 6, 7, 8]) == 0
    assert bm.block_table("b") == [2, 3]


def test_hits_on_blocks_of_a_live_sequence_need_no_free_block() -> None:
    bm = cached(4)
    bm.allocate("a", list(range(10)))  # [0, 1, 2]: one block left
    plain = BlockManager(4, B)
    plain.allocate("a", list(range(10)))
    assert not plain.can_allocate(list(range(10)))  # without caching it would need three blocks
    assert bm.can_allocate(list(range(10)))
    assert bm.allocate("b", list(range(10))) == 8
    assert bm.block_table("b") == [0, 1, 3]
    assert bm.num_free_blocks == 0
    assert bm.can_allocate(list(range(8)))  # fully cached, pool empty: still fits
    assert bm.allocate("c", list(range(8))) == 8
    assert bm.block_table("c") == [0, 1]
    assert bm.ref_count(0) == 3
    assert not bm.can_allocate(list(range(9)))
    bm.check_invariants()


def test_watermark_counts_only_blocks_the_allocation_takes() -> None:
    bm = cached(8, watermark=0.5)  # 4 blocks of headroom
    bm.allocate("a", list(range(16)))  # [0..3]; 4 free = the watermark
    assert not bm.can_allocate(1)
    assert bm.can_allocate(list(range(16)))  # all four blocks are live hits
    assert not bm.can_allocate(list(range(17)))
    assert bm.allocate("b", list(range(16))) == 16
    with pytest.raises(OutOfBlocks):
        bm.allocate("c", list(range(17)))


def test_count_allocations_are_never_cached() -> None:
    bm = cached(8)
    assert bm.allocate("a", 8) == 0
    bm.free("a")
    assert bm.num_cached_free_blocks == 0
    assert bm.allocate("b", list(range(8))) == 0


# ------------------------------------------------------------------ cached-free blocks and eviction
def test_freed_blocks_stay_findable_and_count_as_free() -> None:
    bm = cached(6)
    bm.allocate("a", [*range(8), 99])  # [0, 1, 2]; block 2 is partial and has no hash
    bm.free("a")
    assert bm.num_free_blocks == 6
    assert bm.num_cached_free_blocks == 2
    assert bm.usage == 0.0
    assert bm.allocate("b", list(range(8))) == 8
    assert bm.block_table("b") == [0, 1]
    assert bm.num_cached_free_blocks == 0
    assert bm.num_free_blocks == 4
    assert bm.stats.evicted_blocks == 0
    # the partial block 2 went to the head (issue 15; it went to the tail before: [3, 4, 5, 2])
    assert drain_free_list(bm) == [2, 3, 4, 5]


@pytest.mark.parametrize(("evictions", "expected_hit"), [(0, 12), (1, 8), (2, 4), (3, 0)])
def test_lru_evicts_a_freed_sequence_from_its_last_block(evictions: int, expected_hit: int) -> None:
    bm = cached(6)
    bm.allocate("a", list(range(12)))  # [0, 1, 2]
    bm.allocate("b", new_content(1, 12))  # [3, 4, 5]
    bm.free("a")
    bm.free("b")  # free list: [2, 1, 0, 5, 4, 3], every block cached
    assert bm.num_cached_free_blocks == 6
    popped = []
    for i in range(evictions):
        bm.allocate(f"x{i}", new_content(10 + i, B))
        popped += bm.block_table(f"x{i}")
    assert popped == [2, 1, 0][:evictions]
    assert bm.stats.evicted_blocks == evictions
    assert bm.allocate("again", list(range(12))) == expected_hit
    bm.check_invariants()


def test_a_hit_refreshes_lru_order() -> None:
    bm = cached(6)
    bm.allocate("a", list(range(12)))  # [0, 1, 2]
    bm.allocate("b", new_content(1, 12))  # [3, 4, 5]
    bm.free("a")
    bm.free("b")  # [2, 1, 0, 5, 4, 3]
    assert bm.allocate("c", list(range(12))) == 12
    bm.free("c")  # a's blocks are the most recently used now: [5, 4, 3, 2, 1, 0]
    assert drain_free_list(bm) == [5, 4, 3, 2, 1, 0]
    assert bm.stats.evicted_blocks == 6
    assert bm.num_cached_free_blocks == 0


def test_a_reused_block_loses_its_stale_hash() -> None:
    bm = cached(4)
    bm.allocate("a", list(range(4)))  # [0]
    bm.free("a")  # [1, 2, 3, 0]
    y = new_content(1, 16)
    assert bm.allocate("y", y) == 0
    assert bm.block_table("y") == [1, 2, 3, 0]  # block 0 is popped last and evicted
    assert bm.stats.evicted_blocks == 1
    bm.free("y")  # [0, 3, 2, 1], all carrying y's hashes
    assert bm.num_cached_free_blocks == 4
    assert bm.allocate("b", list(range(4))) == 0  # block 0 no longer answers for range(4)
    assert bm.block_table("b") == [0]  # ... and popping it evicts y's last block
    assert bm.stats.evicted_blocks == 2
    assert bm.allocate("c", y[:12]) == 12  # y's first three blocks are still cached
    assert bm.block_table("c") == [1, 2, 3]
    bm.check_invariants()


def test_reusing_a_freed_sequences_tail_blocks_keeps_only_its_head_cached() -> None:
    bm = cached(6)
    bm.allocate("a", list(range(12)))  # [0, 1, 2]
    bm.free("a")  # [3, 4, 5, 2, 1, 0]
    bm.allocate("x", 20)  # pops 3, 4, 5, 2, 1: a's blocks 2 and 1 now hold unknown tokens
    assert bm.stats.evicted_blocks == 2
    assert bm.num_cached_free_blocks == 1
    bm.free("x")  # unknown contents: to the head, last block first: [1, 2, 5, 4, 3, 0]
    assert bm.allocate("y", list(range(12))) == 4  # block 0 still answers; 1 and 2 must not
    assert bm.block_table("y") == [0, 1, 2]
    bm.check_invariants()


def test_a_block_reused_by_a_count_allocation_forgets_its_content() -> None:
    bm = cached(3)
    bm.allocate("a", list(range(4)))  # [0]
    bm.free("a")  # [1, 2, 0]
    bm.allocate("x", 12)  # pops 1, 2, 0: block 0's content is unknown now
    assert bm.stats.evicted_blocks == 1
    bm.free("x")
    assert bm.num_cached_free_blocks == 0
    assert bm.allocate("b", list(range(4))) == 0


def test_a_cache_hit_never_evicts_a_block_the_same_allocation_uses() -> None:
    bm = cached(3)
    bm.allocate("a", list(range(4)))  # [0]
    bm.allocate("b", new_content(1, 8))  # [1, 2]
    bm.free("a")
    bm.free("b")  # [0, 2, 1]: the block the next prompt hits is at the head
    prompt = [*range(4), *new_content(2, 8)]
    assert bm.can_allocate(prompt)
    assert bm.allocate("y", prompt) == 4
    assert bm.block_table("y") == [0, 2, 1]
    assert bm.stats.evicted_blocks == 2
    assert bm.num_free_blocks == 0
    bm.check_invariants()


def test_a_pool_full_of_cached_blocks_serves_a_fully_cached_prompt() -> None:
    bm = cached(3)
    bm.allocate("a", list(range(12)))
    bm.free("a")  # [2, 1, 0]
    assert bm.allocate("b", list(range(12))) == 12
    assert bm.block_table("b") == [0, 1, 2]
    assert bm.stats.evicted_blocks == 0


def test_a_failed_allocation_with_cached_hits_changes_nothing() -> None:
    bm = cached(3)
    bm.allocate("a", list(range(8)))  # [0, 1]
    bm.free("a")  # [2, 1, 0]
    prompt = [*range(8), *new_content(1, 8)]  # hits 0 and 1, then needs two more blocks: only one left
    before = observe(bm, [])
    assert not bm.can_allocate(prompt)
    with pytest.raises(OutOfBlocks):
        bm.allocate("y", prompt)
    assert "y" not in bm
    assert observe(bm, []) == before
    bm.check_invariants()
    assert drain_free_list(bm) == [2, 1, 0]  # neither hit block moved in the LRU order
    assert bm.stats.evicted_blocks == 2


def test_can_allocate_changes_nothing_not_even_lru_order() -> None:
    bm = cached(3)
    bm.allocate("a", list(range(4)))  # [0]
    bm.allocate("b", new_content(1, 4))  # [1]
    bm.free("a")
    bm.free("b")  # [2, 0, 1]
    before = observe(bm, [])
    for prompt in (list(range(4)), list(range(8)), new_content(1, 4), list(range(13)), 3):
        bm.can_allocate(prompt)
    assert bm.can_allocate(list(range(4)))
    assert observe(bm, []) == before
    assert drain_free_list(bm) == [2, 0, 1]


# ------------------------------------------------------------------ free order (vLLM V1, issue 15)
def test_free_sends_a_partial_block_to_the_head_and_cached_blocks_to_the_tail() -> None:
    bm = cached(8)
    bm.allocate("a", list(range(10)))  # [0, 1, 2]; block 2 holds two tokens
    bm.free("a")
    assert bm.num_cached_free_blocks == 2
    assert drain_free_list(bm) == [2, 3, 4, 5, 6, 7, 1, 0]


def test_blocks_of_unknown_contents_go_to_the_head_last_block_first() -> None:
    bm = cached(8)
    bm.allocate("a", [1, 2, 3, 4])  # [0], full: cached
    bm.append("a", 8)  # [0, 1, 2]: contents given as a count, never cached
    bm.free("a")
    assert drain_free_list(bm) == [2, 1, 3, 4, 5, 6, 7, 0]


def test_reusing_the_partial_block_first_keeps_cached_blocks_alive() -> None:
    bm = cached(4)
    bm.allocate("a", list(range(8)))  # [0, 1], both full
    bm.free("a")  # [2, 3, 1, 0]
    bm.allocate("b", new_content(1, 6))  # [2, 3]; block 3 holds two tokens
    bm.free("b")  # [3, 1, 0, 2]: b's partial block at the head, its full one at the tail
    assert bm.allocate("x", 4) == 0
    assert bm.block_table("x") == [3]  # every block at the tail would have popped block 1, a's second block
    assert bm.stats.evicted_blocks == 0
    assert bm.allocate("again", list(range(8))) == 8
    bm.check_invariants()


def test_a_shared_partial_block_goes_to_the_head_with_its_last_holder() -> None:
    bm = cached(8)
    bm.allocate("p", list(range(6)))  # [0, 1]; block 1 holds two tokens
    bm.fork("p", "c")
    bm.free("p")  # nothing released: c still holds both
    assert bm.num_free_blocks == 6
    bm.free("c")
    assert drain_free_list(bm) == [1, 2, 3, 4, 5, 6, 7, 0]


# ------------------------------------------------------------------ blocks filled by append
def test_blocks_filled_by_append_with_token_ids_are_reused_after_free() -> None:
    """Multi-turn chat: the next prompt repeats the previous turn's prompt and output."""
    bm = cached(8)
    bm.allocate("turn1", [1, 2])
    bm.append("turn1", [3, 4, 5, 6, 7, 8])  # [0, 1], both full now
    bm.free("turn1")
    assert bm.allocate("turn2", [1, 2, 3, 4, 5, 6, 7, 8, 9]) == 8
    assert bm.block_table("turn2")[:2] == [0, 1]


def test_blocks_filled_by_count_appends_never_hit() -> None:
    bm = cached(8)
    bm.allocate("a", [1, 2])
    bm.append("a", 6)  # contents unknown
    bm.free("a")
    assert bm.allocate("b", [1, 2, 3, 4, 5, 6, 7, 8]) == 0


def test_a_copied_block_is_cached_under_its_own_content() -> None:
    bm = cached(8)
    bm.allocate("a", list(range(6)))  # [0, 1]; block 1 holds [4, 5]
    bm.fork("a", "b")
    assert bm.append("b", [6, 7]) == [(1, 2)]  # b's copy holds [4, 5, 6, 7]
    assert bm.append("a", [9, 9]) == []  # a's block 1 holds [4, 5, 9, 9]
    bm.free("a")
    bm.free("b")
    assert bm.allocate("c", list(range(8))) == 8
    assert bm.block_table("c") == [0, 2]
    assert bm.allocate("d", [0, 1, 2, 3, 4, 5, 9, 9]) == 8
    assert bm.block_table("d") == [0, 1]
    bm.check_invariants()


# ------------------------------------------------------------------ reset and counters
def test_reset_prefix_cache_refuses_while_a_sequence_holds_a_block() -> None:
    bm = cached(8)
    bm.allocate("live", list(range(5)))  # [0, 1]
    bm.allocate("gone", new_content(1, 8))  # [2, 3]
    bm.free("gone")
    before = observe(bm, ["live"])
    assert bm.reset_prefix_cache() is False
    assert observe(bm, ["live"]) == before
    assert bm.num_cached_free_blocks == 2
    assert bm.allocate("again", new_content(1, 8)) == 8
    assert bm.allocate("live2", list(range(4))) == 4


def test_reset_prefix_cache_forgets_every_hash_when_nothing_is_held() -> None:
    bm = cached(8)
    bm.allocate("a", list(range(8)))
    bm.allocate("b", new_content(1, 12))
    bm.free("a")
    bm.free("b")
    assert bm.num_cached_free_blocks == 5
    assert bm.reset_prefix_cache() is True
    assert bm.num_cached_free_blocks == 0
    assert bm.num_free_blocks == 8
    bm.check_invariants()
    assert bm.allocate("c", list(range(8))) == 0
    assert bm.allocate("d", new_content(1, 12)) == 0
    assert bm.stats.evicted_blocks == 0  # forgotten hashes are not evictions
    assert len(set(bm.block_table("c") + bm.block_table("d"))) == 5


def test_stats_count_queries_hits_evictions_and_copies() -> None:
    bm = cached(4)
    bm.allocate("a", list(range(10)))  # [0, 1, 2]
    assert stats_tuple(bm) == (10, 0, 0, 0)
    bm.allocate("b", list(range(10)))  # hits 0, 1; new block 3
    assert stats_tuple(bm) == (20, 8, 0, 0)
    bm.fork("b", "c")
    bm.free("a")  # frees block 2 (no hash, partial)
    bm.append("c")  # copies b's partial block 3 into block 2
    assert stats_tuple(bm) == (20, 8, 0, 1)
    bm.free("b")  # [3]: the partial block 3 to the head
    bm.free(
        "c"
    )  # [2, 3, 1, 0]: partial 2 to the head, cached 1 and 0 to the tail (was [3, 2, 1, 0], issue 15)
    assert bm.num_cached_free_blocks == 2
    bm.allocate("d", new_content(1, 16))  # pops all four, evicting the two cached ones
    assert stats_tuple(bm) == (36, 8, 2, 1)
    assert bm.block_table("d") == [2, 3, 1, 0]


def test_freed_sequences_are_let_go_when_no_lookup_walks_past_their_chain() -> None:
    # Every allocation of this prompt hits all its blocks, so its continuation waits under the hash of its
    # last block, which no lookup of it walks past: without pruning, each dead sequence stayed there.
    bm = cached(8)
    for i in range(1000):
        bm.allocate(i, list(range(8)))
        bm.free(i)
    gc.collect()
    assert sum(type(o) is Sequence for o in gc.get_objects()) < 40
    assert bm.stats.hit_tokens == 999 * 8


def test_cached_free_block_ids_lists_the_findable_free_blocks_in_free_order() -> None:
    bm = BlockManager(8, 4, enable_prefix_caching=True)
    bm.allocate("a", list(range(1, 10)))  # blocks 0, 1 full, 2 holds one token
    bm.free("a")
    assert bm.free_block_ids() == [2, 3, 4, 5, 6, 7, 1, 0]  # the partial block first, full ones last
    assert bm.cached_free_block_ids() == [1, 0]
    bm.allocate("b", [1, 2, 3, 4, 99])  # reuses block 0 (its prefix), takes block 2
    assert bm.cached_free_block_ids() == [1]
    assert BlockManager(8, 4).cached_free_block_ids() == []
