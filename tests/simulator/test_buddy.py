"""Buddy allocator: power-of-two regions, splitting, merging, and the fragmentation it causes."""

from __future__ import annotations

import random

import pytest

from pagedkv.errors import InvalidArgument
from pagedkv.simulator.buddy import BuddyAllocator


def test_non_power_of_two_space_is_cut_into_aligned_regions() -> None:
    buddy = BuddyAllocator(981)  # 512 + 256 + 128 + 64 + 16 + 4 + 1
    assert buddy.free_units == 981
    starts = [buddy.allocate(7) for _ in range(8)]  # chunks of 128
    assert starts[:7] == [768, 512, 640, 0, 128, 256, 384]  # smallest block that fits first
    assert starts[7] is None  # 981 - 7*128 = 85 units are free, but in pieces of 64, 16, 4, 1
    assert buddy.free_units == 85


def test_paper_orca_max_fits_seven_requests_in_15_7k_slots() -> None:
    """2048-token reservations (128 blocks of 16) in 15,728 slots: Figure 13a's 7 batched requests."""
    buddy = BuddyAllocator(15_728 // 16)
    placed = 0
    while buddy.allocate(BuddyAllocator.order_for(2048 // 16)) is not None:
        placed += 1
    assert placed == 7


def test_split_takes_the_lowest_address_and_free_merges_back() -> None:
    buddy = BuddyAllocator(16)
    a, b, c = buddy.allocate(0), buddy.allocate(1), buddy.allocate(2)
    assert (a, b, c) == (0, 2, 4)
    buddy.free(b)
    buddy.free(a)
    buddy.free(c)
    assert buddy.allocate(4) == 0  # everything merged back into the one 16-unit block


def test_freed_blocks_do_not_merge_across_regions() -> None:
    buddy = BuddyAllocator(12)  # regions 8 @ 0 and 4 @ 8
    low, high = buddy.allocate(3), buddy.allocate(2)
    assert (low, high) == (0, 8)
    buddy.free(low)
    buddy.free(high)
    assert buddy.allocate(4) is None  # 12 free units, but never a 16-unit block
    assert buddy.allocate(3) == 0


def test_random_alloc_free_keeps_units_accounted() -> None:
    rng = random.Random(7)
    buddy = BuddyAllocator(1000)
    held: dict[int, int] = {}
    for _ in range(2000):
        if held and rng.random() < 0.5:
            start = rng.choice(list(held))
            buddy.free(start)
            del held[start]
        else:
            order = rng.randrange(0, 6)
            start = buddy.allocate(order)
            if start is not None:
                assert all(start + (1 << order) <= s or s + (1 << o) <= start for s, o in held.items())
                held[start] = order
        assert buddy.free_units + sum(1 << o for o in held.values()) == 1000
    for start in list(held):
        buddy.free(start)
    assert buddy.free_units == 1000
    assert buddy.allocate(9) == 0  # fully merged again: the 512-unit region is whole


def test_order_for_rounds_up_to_a_power_of_two() -> None:
    assert [BuddyAllocator.order_for(n) for n in (1, 2, 3, 4, 5, 128, 129)] == [0, 1, 2, 2, 3, 7, 8]


def test_bad_use_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="num_units"):
        BuddyAllocator(0)
    buddy = BuddyAllocator(8)
    with pytest.raises(InvalidArgument, match="no allocated block starts at unit 3"):
        buddy.free(3)
