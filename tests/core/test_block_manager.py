"""BlockManager without prefix caching: allocation order, translation, fork and copy-on-write, watermark.

Block ids are asserted exactly: the contract fixes the free list (starts ``[0 .. num_blocks-1]``, allocation
pops the head, and without prefix caching ``free`` puts a sequence's blocks back at the head, last block
first, as vLLM V1 does), so every id below follows from it. ``drain_free_list`` reads the free-list order
from outside by allocating one block at a time.
"""

from __future__ import annotations

import copy
import math
import pickle
import random
from collections.abc import Callable

import pytest
from reference import Reference, assert_matches, drain_free_list, stats_tuple

from pagedkv import BlockManager, OutOfBlocks, Stats


def test_configuration_is_exposed() -> None:
    bm = BlockManager(num_blocks=7, block_size=3, enable_prefix_caching=True, watermark=0.25)
    assert (bm.num_blocks, bm.block_size, bm.enable_prefix_caching, bm.watermark) == (7, 3, True, 0.25)
    default = BlockManager(5)
    assert (default.block_size, default.enable_prefix_caching, default.watermark) == (16, False, 0.0)


def test_fresh_manager_is_empty_and_free_list_is_in_id_order() -> None:
    bm = BlockManager(num_blocks=6, block_size=4)
    assert bm.num_free_blocks == 6
    assert bm.num_cached_free_blocks == 0
    assert bm.usage == 0.0
    assert len(bm) == 0
    assert [bm.ref_count(b) for b in range(6)] == [0] * 6
    assert stats_tuple(bm) == (0, 0, 0, 0)
    assert isinstance(bm.stats, Stats)
    bm.check_invariants()
    assert drain_free_list(bm) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(("num_tokens", "blocks"), [(1, 1), (3, 1), (4, 1), (5, 2), (8, 2), (9, 3), (12, 3)])
def test_allocate_reserves_ceil_n_over_block_size_blocks(num_tokens: int, blocks: int) -> None:
    bm = BlockManager(num_blocks=3, block_size=4)
    assert bm.allocate("s", num_tokens) == 0
    assert bm.block_table("s") == list(range(blocks))
    assert bm.num_tokens("s") == num_tokens
    assert bm.num_free_blocks == 3 - blocks
    bm.check_invariants()


def test_allocate_pops_the_free_list_head_in_order() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    assert bm.allocate("a", 10) == 0
    assert bm.allocate("b", list(range(4))) == 0  # ids, but prefix caching is off: never a hit
    assert bm.block_table("a") == [0, 1, 2]
    assert bm.block_table("b") == [3]
    assert [bm.ref_count(b) for b in range(8)] == [1, 1, 1, 1, 0, 0, 0, 0]
    assert bm.num_free_blocks == 4
    assert bm.usage == pytest.approx(0.5)
    assert "a" in bm and "b" in bm and "c" not in bm
    assert len(bm) == 2


def test_block_table_is_a_copy() -> None:
    bm = BlockManager(num_blocks=4, block_size=4)
    bm.allocate("a", 5)
    table = bm.block_table("a")
    table.append(3)
    table[0] = 99
    assert bm.block_table("a") == [0, 1]
    bm.check_invariants()


def test_free_puts_blocks_back_at_the_head_last_block_first() -> None:
    # Was [4, 5, 2, 1, 0] (every freed block at the tail). Issue 15 adopts vLLM V1's order: without prefix
    # caching no freed block holds anything a lookup could find, so all go to the head and are reused first.
    bm = BlockManager(num_blocks=6, block_size=4)
    bm.allocate("a", 12)  # [0, 1, 2]
    bm.allocate("b", 4)  # [3]
    bm.free("a")
    assert "a" not in bm
    assert bm.num_free_blocks == 5
    assert drain_free_list(bm) == [2, 1, 0, 4, 5]


def test_free_order_across_sequences_is_last_freed_first_reused() -> None:
    # Was [3, 2, 5, 4, 1, 0] (first freed, first reused); with every block going to the head (issue 15,
    # vLLM V1), the sequence freed last is reused first.
    bm = BlockManager(num_blocks=6, block_size=2)
    bm.allocate("a", 4)  # [0, 1]
    bm.allocate("b", 4)  # [2, 3]
    bm.allocate("c", 3)  # [4, 5]
    bm.free("b")  # [3, 2]
    bm.free("c")  # [5, 4, 3, 2]
    bm.free("a")  # [1, 0, 5, 4, 3, 2]
    assert bm.num_free_blocks == 6
    assert drain_free_list(bm) == [1, 0, 5, 4, 3, 2]


def test_append_allocates_only_when_crossing_a_block_boundary() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    bm.allocate("s", 1)
    tables = []
    for _ in range(8):
        assert bm.append("s") == []
        tables.append(bm.block_table("s"))
    # tokens 2..9: the second block appears at token 5, the third at token 9
    assert tables == [[0], [0], [0], [0, 1], [0, 1], [0, 1], [0, 1], [0, 1, 2]]
    assert bm.num_tokens("s") == 9
    assert bm.append("s", 3) == []  # 12 tokens: fills block 2 exactly, no new block
    assert bm.block_table("s") == [0, 1, 2]
    assert bm.append("s", [7, 7, 7, 7, 7]) == []  # 17 tokens: two more blocks
    assert bm.block_table("s") == [0, 1, 2, 3, 4]
    assert bm.num_tokens("s") == 17
    assert bm.num_free_blocks == 3
    bm.check_invariants()


def test_one_append_can_cross_many_boundaries() -> None:
    bm = BlockManager(num_blocks=40, block_size=16)
    bm.allocate("s", 5)
    assert bm.append("s", 500) == []
    assert bm.block_table("s") == list(range(math.ceil(505 / 16)))
    assert bm.num_tokens("s") == 505


# ------------------------------------------------------------------ the seed's checkpoints
def naive_contiguous_waste(lengths: list[int], max_len: int) -> list[int]:
    """A contiguous KV cache reserves max_len slots per request up front; waste = allocated - used."""
    return [max_len - n for n in lengths]


def test_checkpoint_waste_of_100_sequences_naive_vs_paged() -> None:
    rng = random.Random(2)
    block_size, max_len = 16, 2048
    lengths = [rng.randint(1, max_len) for _ in range(100)]
    naive = naive_contiguous_waste(lengths, max_len)
    assert sum(naive) == 100 * max_len - sum(lengths)

    bm = BlockManager(num_blocks=sum(math.ceil(n / block_size) for n in lengths), block_size=block_size)
    for i, n in enumerate(lengths):
        bm.allocate(i, n)
    paged = [len(bm.block_table(i)) * block_size - bm.num_tokens(i) for i in range(100)]
    assert all(0 <= w < block_size for w in paged)  # only the last block of each sequence is partial
    held = bm.num_blocks - bm.num_free_blocks
    assert held * block_size - sum(lengths) == sum(paged)
    assert bm.num_free_blocks == 0  # the pool was sized exactly: nothing reserved beyond ceil(n / B)
    assert sum(paged) < 100 * block_size < sum(naive)


def test_checkpoint_1000_blocks_serve_100_sequences_on_demand_without_running_out() -> None:
    rng = random.Random(3)
    block_size = 16
    # prompt + output <= 160 tokens = 10 blocks each: 100 sequences fit 1000 blocks only when blocks are
    # handed out on demand (a contiguous cache reserving 2048 slots each would need 12,800 blocks).
    jobs = {i: (rng.randint(1, 100), rng.randint(1, 60)) for i in range(100)}
    bm = BlockManager(num_blocks=1000, block_size=block_size)
    for i, (prompt, _) in jobs.items():
        bm.allocate(i, prompt)
    remaining = {i: out for i, (_, out) in jobs.items()}
    peak = 0
    while remaining:
        for i in list(remaining):
            assert bm.append(i) == []
            remaining[i] -= 1
            if remaining[i] == 0:
                assert bm.num_tokens(i) == sum(jobs[i])
                bm.free(i)
                del remaining[i]
        held = sum(math.ceil(bm.num_tokens(i) / block_size) for i in remaining)
        assert bm.num_blocks - bm.num_free_blocks == held
        assert bm.usage == pytest.approx(held / 1000)
        peak = max(peak, held)
    assert 0 < peak <= 1000
    assert bm.num_free_blocks == 1000
    assert len(bm) == 0
    bm.check_invariants()


def test_checkpoint_translate_every_position_of_1000_appended_tokens() -> None:
    bm = BlockManager(num_blocks=64, block_size=16)
    bm.allocate("s", 1)
    for _ in range(999):
        bm.append("s")
    assert bm.num_tokens("s") == 1000
    assert bm.block_table("s") == list(range(63))
    for pos in range(1000):
        assert bm.translate("s", pos) == (pos // 16, pos % 16)
        assert bm.slot("s", pos) == pos


def test_translate_and_slot_follow_a_non_contiguous_block_table() -> None:
    bm = BlockManager(num_blocks=20, block_size=4)
    bm.allocate("a", 1)  # [0]
    bm.allocate("b", 1)  # [1]
    for _ in range(35):  # interleaved growth: a takes the even blocks, b the odd ones
        bm.append("a")
        bm.append("b")
    assert bm.block_table("a") == [0, 2, 4, 6, 8, 10, 12, 14, 16]
    assert bm.block_table("b") == [1, 3, 5, 7, 9, 11, 13, 15, 17]
    for pos in range(36):
        assert bm.translate("a", pos) == (2 * (pos // 4), pos % 4)
        assert bm.translate("b", pos) == (2 * (pos // 4) + 1, pos % 4)
        assert bm.slot("b", pos) == (2 * (pos // 4) + 1) * 4 + pos % 4


def fork_at_100_and_generate_50(interleaved: bool) -> tuple[BlockManager, list[list[tuple[int, int]]]]:
    bm = BlockManager(num_blocks=32, block_size=16)
    bm.allocate("parent", 100)  # blocks 0..6, block 6 holds 4 tokens
    bm.fork("parent", "child")
    copies = []
    order = ["parent", "child"] * 50 if interleaved else ["parent"] * 50 + ["child"] * 50
    for s in order:
        copies.append(bm.append(s))
    return bm, copies


@pytest.mark.parametrize("interleaved", [True, False], ids=["interleaved", "one-after-the-other"])
def test_checkpoint_fork_at_100_tokens_both_branches_generate_50(interleaved: bool) -> None:
    bm, copies = fork_at_100_and_generate_50(interleaved)
    parent, child = bm.block_table("parent"), bm.block_table("child")
    assert bm.num_tokens("parent") == bm.num_tokens("child") == 150
    assert len(parent) == len(child) == 10
    assert parent[:6] == child[:6] == [0, 1, 2, 3, 4, 5]
    assert all(bm.ref_count(b) == 2 for b in range(6))
    # the parent writes first: it copies the shared partial block 6 into the free-list head, block 7
    assert [c for c in copies if c] == [[(6, 7)]]
    assert bm.stats.cow_copies == 1
    assert parent[6] == 7 and child[6] == 6
    assert bm.ref_count(6) == bm.ref_count(7) == 1
    assert set(parent[7:]).isdisjoint(child[7:])
    if interleaved:
        assert parent[7:] == [8, 10, 12] and child[7:] == [9, 11, 13]
    else:
        assert parent[7:] == [8, 9, 10] and child[7:] == [11, 12, 13]
    assert bm.num_blocks - bm.num_free_blocks == 14
    assert len(set(parent) | set(child)) == 14
    bm.check_invariants()


def test_fork_shares_every_block_and_allocates_nothing() -> None:
    bm = BlockManager(num_blocks=10, block_size=4)
    bm.allocate("p", 10)
    bm.fork("p", "c")
    assert bm.block_table("c") == bm.block_table("p") == [0, 1, 2]
    assert bm.num_tokens("c") == 10
    assert [bm.ref_count(b) for b in range(4)] == [2, 2, 2, 0]
    assert bm.num_free_blocks == 7
    assert len(bm) == 2
    bm.check_invariants()


def test_fork_on_a_block_boundary_records_no_copy() -> None:
    bm = BlockManager(num_blocks=32, block_size=16)
    bm.allocate("parent", 96)  # exactly 6 full blocks
    bm.fork("parent", "child")
    for _ in range(50):
        assert bm.append("parent") == []
        assert bm.append("child") == []
    assert bm.stats.cow_copies == 0
    assert bm.block_table("parent") == [0, 1, 2, 3, 4, 5, 6, 8, 10, 12]
    assert bm.block_table("child") == [0, 1, 2, 3, 4, 5, 7, 9, 11, 13]
    assert all(bm.ref_count(b) == 2 for b in range(6))
    assert bm.num_blocks - bm.num_free_blocks == 14


def test_full_shared_blocks_stay_shared_after_both_branches_write() -> None:
    bm = BlockManager(num_blocks=16, block_size=4)
    bm.allocate("p", 6)  # [0, 1]; block 1 holds 2 tokens
    bm.fork("p", "c")
    assert bm.append("c", 10) == [(1, 2)]  # copy first, then blocks for the overflow
    assert bm.block_table("c") == [0, 2, 3, 4]
    assert bm.append("p", 10) == []  # block 1 is the parent's alone now: written in place
    assert bm.block_table("p") == [0, 1, 5, 6]
    assert bm.ref_count(0) == 2
    assert bm.stats.cow_copies == 1


def test_n_way_fork_refcounts_and_one_copy_per_writer() -> None:
    bm = BlockManager(num_blocks=32, block_size=16)
    bm.allocate("p", 100)  # [0..6]
    for c in ("c1", "c2", "c3"):
        bm.fork("p", c)
    assert [bm.ref_count(b) for b in range(8)] == [4] * 7 + [0]
    assert bm.num_free_blocks == 25
    assert bm.append("c1") == [(6, 7)]
    assert bm.ref_count(6) == 3
    assert bm.append("c2") == [(6, 8)]
    assert bm.append("c3") == [(6, 9)]
    assert bm.ref_count(6) == 1
    assert bm.append("p") == []  # the last holder writes in place
    assert [bm.block_table(s)[6] for s in ("p", "c1", "c2", "c3")] == [6, 7, 8, 9]
    assert all(bm.ref_count(b) == 4 for b in range(6))
    assert bm.stats.cow_copies == 3
    bm.free("c2")
    assert all(bm.ref_count(b) == 3 for b in range(6))
    assert bm.ref_count(8) == 0
    bm.free("p")
    bm.free("c1")
    assert all(bm.ref_count(b) == 1 for b in range(6))
    assert bm.num_free_blocks == 32 - 7
    bm.free("c3")
    assert bm.num_free_blocks == 32
    bm.check_invariants()


def test_fork_of_a_fork_counts_every_holder() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    bm.allocate("a", 6)  # [0, 1]
    bm.fork("a", "b")
    bm.fork("b", "c")
    assert bm.ref_count(0) == bm.ref_count(1) == 3
    assert bm.append("c") == [(1, 2)]
    assert bm.append("b") == [(1, 3)]
    assert bm.append("a") == []
    assert bm.stats.cow_copies == 2


def test_freeing_the_parent_leaves_the_child_intact_and_unshared() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    bm.allocate("p", 6)  # [0, 1]
    bm.fork("p", "c")
    bm.free("p")
    assert bm.block_table("c") == [0, 1]
    assert bm.ref_count(0) == bm.ref_count(1) == 1
    assert bm.num_free_blocks == 6
    assert bm.append("c") == []  # not shared any more: no copy
    assert bm.block_table("c") == [0, 1]
    assert bm.stats.cow_copies == 0


def test_a_shared_block_returns_to_the_free_list_only_with_its_last_holder() -> None:
    bm = BlockManager(num_blocks=4, block_size=4)
    bm.allocate("p", 8)  # [0, 1]
    bm.fork("p", "c")
    bm.append("c", 4)  # [0, 1, 2]
    bm.free("c")
    assert bm.num_free_blocks == 2  # only block 2 came back, to the head (issue 15; was [3, 2])
    assert drain_free_list(bm) == [2, 3]


# ------------------------------------------------------------------ append_batch
def test_append_batch_equals_appending_one_token_to_each_in_order() -> None:
    def setup() -> BlockManager:
        bm = BlockManager(num_blocks=40, block_size=4)
        bm.allocate("a", 6)
        bm.fork("a", "b")
        bm.fork("a", "c")
        bm.allocate("d", 8)
        return bm

    seqs = ["c", "d", "a", "b"]
    batched, single = setup(), setup()
    batch_copies, single_copies = [], []
    for step in range(9):
        ids = [step, step + 1, step + 2, step + 3]
        batch_copies.append(batched.append_batch(seqs, ids if step % 2 else None))
        single_copies.append([c for s, t in zip(seqs, ids, strict=True) for c in single.append(s, [t])])
    assert batch_copies == single_copies
    # c and a copy the shared partial block 1; d takes a new block in between; b then writes in place
    assert batch_copies[0] == [(1, 4), (1, 6)]
    for s in seqs:
        assert batched.block_table(s) == single.block_table(s)
        assert batched.num_tokens(s) == (17 if s == "d" else 15)
    assert stats_tuple(batched) == stats_tuple(single)
    assert drain_free_list(batched) == drain_free_list(single)


def test_append_batch_with_token_ids_matches_the_reference() -> None:
    bm = BlockManager(num_blocks=20, block_size=2)
    ref = Reference(20, 2)
    for s, n in (("x", 3), ("y", 1), ("z", 4)):
        bm.allocate(s, n)
        ref.allocate(s, n)
    bm.fork("x", "w")
    ref.fork("x", "w")
    for step in range(5):
        seqs = ["w", "x", "z", "y"][: 4 - step % 2]
        ids = list(range(step, step + len(seqs)))
        assert bm.append_batch(seqs, ids) == ref.append_batch(seqs, ids)
        assert_matches(bm, ref)
    assert drain_free_list(bm) == ref.free_order()


# ------------------------------------------------------------------ watermark, usage, counters
def test_watermark_limits_admission_but_not_append() -> None:
    bm = BlockManager(num_blocks=10, block_size=4, watermark=0.5)  # 5 blocks of headroom
    assert bm.can_allocate(20)  # 5 blocks: leaves exactly the watermark
    assert not bm.can_allocate(21)  # 6 blocks: would eat into it
    assert not bm.can_allocate(list(range(21)))
    with pytest.raises(OutOfBlocks):
        bm.allocate("big", 21)
    assert bm.num_free_blocks == 10 and "big" not in bm
    bm.allocate("s", 20)
    assert bm.num_free_blocks == 5
    assert not bm.can_allocate(1)
    with pytest.raises(OutOfBlocks):
        bm.allocate("t", 1)
    bm.append("s", 20)  # append may use the headroom: 5 more blocks
    assert bm.block_table("s") == list(range(10))
    assert bm.num_free_blocks == 0
    with pytest.raises(OutOfBlocks):
        bm.append("s")
    assert bm.num_tokens("s") == 40
    bm.check_invariants()


def test_zero_watermark_admits_until_the_pool_is_full() -> None:
    bm = BlockManager(num_blocks=4, block_size=4)
    assert bm.can_allocate(16)
    assert not bm.can_allocate(17)
    bm.allocate("a", 16)
    assert bm.usage == 1.0
    assert not bm.can_allocate(1)


def test_usage_is_the_fraction_of_blocks_held() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    bm.allocate("a", 9)
    assert bm.usage == pytest.approx(3 / 8)
    bm.fork("a", "b")
    assert bm.usage == pytest.approx(3 / 8)  # shared blocks count once
    bm.append("b")
    assert bm.usage == pytest.approx(4 / 8)
    bm.free("a")
    bm.free("b")
    assert bm.usage == 0.0


def test_stats_is_a_snapshot() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    bm.allocate("a", 6)
    bm.fork("a", "b")
    before = bm.stats
    bm.append("b")
    assert before.cow_copies == 0
    assert bm.stats.cow_copies == 1


def test_sequence_ids_can_be_reused_after_free() -> None:
    bm = BlockManager(num_blocks=4, block_size=4)
    bm.allocate(7, 4)
    bm.free(7)  # block 0 back at the head (issue 15; it went to the tail before, giving [1, 2])
    bm.allocate(7, 5)
    assert bm.block_table(7) == [0, 1]
    assert bm.num_tokens(7) == 5


@pytest.mark.parametrize("caching", [False, True], ids=["plain", "prefix-caching"])
@pytest.mark.parametrize(
    "clone", [copy.deepcopy, lambda bm: pickle.loads(pickle.dumps(bm))], ids=["deepcopy", "pickle"]
)
def test_a_copied_manager_is_independent_and_behaves_the_same(caching: bool, clone: Callable) -> None:
    # `pagedkv watch` deep-copies caches, manager included, to replay a run
    bm = BlockManager(num_blocks=16, block_size=4, enable_prefix_caching=caching)
    bm.allocate("a", list(range(10)))
    bm.fork("a", "b")
    bm.append("b", [5])
    bm.free("a")
    twin = clone(bm)
    twin.check_invariants()
    assert twin.free_block_ids() == bm.free_block_ids() and twin.stats == bm.stats
    for manager in (bm, twin):
        manager.allocate("c", list(range(12)))
        manager.append("b", [6, 7, 8])
    assert twin.block_table("c") == bm.block_table("c") and twin.free_block_ids() == bm.free_block_ids()
    assert twin.stats == bm.stats
    twin.free("b")
    assert "b" in bm
    bm.check_invariants()
