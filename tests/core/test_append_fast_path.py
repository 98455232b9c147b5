"""`append` of one token to one sequence takes a fast path; it must behave exactly like the general path.

The general path is reachable with the same arguments spelled differently: a one-element *tuple* of ids
is not a list, and an `int` subclass is not an `int`, so ``append(s, (t,))`` and ``append(s, Count(1))``
take it. Twin managers get the same random calls, one through each spelling; every return value, every
error (type and message), and then block tables, token counts, ref counts, stats and the free-list order
must agree. The explicit cases below check that a failing fast-path call raises the typed error, names
the value, and changes nothing; token ids are only checked when a lookup hashes their block.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from reference import drain_free_list, observe

from pagedkv import BlockManager, InvalidArgument, OutOfBlocks, PagedKVError, UnknownSequence

B = 4


class Count(int):
    """A token count the fast path does not recognise (its type is not `int`)."""


def outcome(call: Callable[..., object], *args: object) -> object:
    try:
        return call(*args)
    except PagedKVError as exc:
        return (type(exc), str(exc))


def state(bm: BlockManager, live: list[int]) -> dict[str, object]:
    return {**observe(bm, live), "free": bm.free_block_ids(), "hashed": bm.stats.hashed_blocks}


@pytest.mark.parametrize("caching", [False, True], ids=["plain", "prefix-caching"])
@pytest.mark.parametrize("seed", range(12))
def test_the_fast_path_matches_the_general_path(caching: bool, seed: int) -> None:
    rng = random.Random(seed)
    fast, general = (BlockManager(12, B, enable_prefix_caching=caching) for _ in range(2))
    live: list[int] = []
    next_id = 0
    for _ in range(300):
        r = rng.random()
        if r < 0.15 or not live:
            next_id += 1
            prompt = [rng.randint(0, 1) for _ in range(rng.randint(1, 3 * B))]
            results = [outcome(bm.allocate, next_id, prompt) for bm in (fast, general)]
            assert results[0] == results[1]
            if next_id in fast:
                live.append(next_id)
        elif r < 0.75:
            seq = rng.choice([*live, -1])  # now and then a sequence that does not exist
            if rng.random() < 0.6:
                token = rng.randint(0, 1)
                assert outcome(fast.append, seq, [token]) == outcome(general.append, seq, (token,))
            else:
                assert outcome(fast.append, seq) == outcome(general.append, seq, Count(1))
        elif r < 0.85:
            next_id += 1
            parent = rng.choice(live)
            fast.fork(parent, next_id)
            general.fork(parent, next_id)
            live.append(next_id)
        else:
            seq = live.pop(rng.randrange(len(live)))
            fast.free(seq)
            general.free(seq)
        assert state(fast, live) == state(general, live)
        fast.check_invariants()
    assert fast.stats.cow_copies > 0


def full_pool(caching: bool) -> BlockManager:
    """No free block: `full` ends on a block boundary, `part` has room left, `child` shares its block."""
    bm = BlockManager(num_blocks=3, block_size=B, enable_prefix_caching=caching)
    bm.allocate("full", list(range(8)))  # [0, 1]
    bm.allocate("part", [9, 9])  # [2]
    bm.fork("part", "child")
    return bm


FAST_PATH_FAILURES: list[tuple[str, Callable[[BlockManager], object], type[PagedKVError], str]] = [
    ("id-at-a-boundary-no-block", lambda bm: bm.append("full", [5]), OutOfBlocks, "'full'"),
    ("count-at-a-boundary-no-block", lambda bm: bm.append("full"), OutOfBlocks, "'full'"),
    ("shared-partial-block-no-copy", lambda bm: bm.append("child", [5]), OutOfBlocks, "'child'"),
    ("unknown-sequence-id", lambda bm: bm.append("ghost-17", [5]), UnknownSequence, "ghost-17"),
    ("unknown-sequence-count", lambda bm: bm.append("ghost-17"), UnknownSequence, "ghost-17"),
]
BAD_IDS = [1.5, "x", 2**63, -(2**63) - 1, None]


@pytest.mark.parametrize("caching", [False, True], ids=["plain", "prefix-caching"])
@pytest.mark.parametrize(
    ("op", "error", "named"), [c[1:] for c in FAST_PATH_FAILURES], ids=[c[0] for c in FAST_PATH_FAILURES]
)
def test_a_failing_fast_path_call_raises_the_typed_error_and_changes_nothing(
    caching: bool, op: Callable[[BlockManager], object], error: type[PagedKVError], named: str
) -> None:
    bm, twin = full_pool(caching), full_pool(caching)
    live = ["full", "part", "child"]
    before = observe(bm, live)
    with pytest.raises(error) as info:
        op(bm)
    assert named in str(info.value)
    assert observe(bm, live) == before
    bm.check_invariants()
    for s in live:
        bm.free(s)
        twin.free(s)
    assert drain_free_list(bm) == drain_free_list(twin)


def test_fast_path_errors_read_like_the_general_paths() -> None:
    bm = full_pool(caching=True)
    assert outcome(bm.append, "full", [5]) == outcome(bm.append, "full", (5,))
    assert outcome(bm.append, "full") == outcome(bm.append, "full", Count(1))
    assert outcome(bm.append, "ghost", [5]) == outcome(bm.append, "ghost", (5,))
    assert "needs 1 free blocks, 0 free" in str(outcome(bm.append, "full", [5]))


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_a_prompt_block_with_a_bad_token_id_is_refused_before_anything_changes(bad: object) -> None:
    bm = full_pool(caching=True)
    bm.free("full")
    before = observe(bm, ["part", "child"])
    prompt = [0, 1, 2, 3, 4, bad, 6, 7, 8]  # the lookup hashes the second block, which holds it
    with pytest.raises(InvalidArgument, match="position 5") as info:
        bm.can_allocate(prompt)
    assert repr(bad) in str(info.value) and "int64" in str(info.value)
    with pytest.raises(InvalidArgument, match="position 5"):
        bm.allocate("new", prompt)
    assert "new" not in bm
    assert observe(bm, ["part", "child"]) == before
    bm.check_invariants()


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_a_kept_bad_token_id_is_never_published_and_fails_no_later_call(bad: object) -> None:
    bm = BlockManager(num_blocks=8, block_size=B, enable_prefix_caching=True)
    bm.allocate("s", [0, 1, 2, 3, 4, 5])  # [0, 1]: its lookup published block 0
    bm.append("s", [bad])  # ids are hashed only when a lookup reaches them: kept as given
    bm.append("s", [7])  # block 1 is full
    bm.free("s")
    assert bm.allocate("t", [0, 1, 2, 3, 4, 5, 6, 7]) == 4  # reaches s's block 1, which cannot be hashed
    assert bm.block_table("t")[0] == 0
    bm.check_invariants()
