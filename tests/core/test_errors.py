"""Bad input and failed requests: a typed error that names the offending value, and no state change at all.

"No state change" is checked three ways against a twin manager that never saw the failing call: everything
the API shows (tables, token counts, every ref count, free and cached-free counts, usage, stats), the prefix
cache (same prompts hit the same way after every sequence is freed), and the free-list order (drained one
block at a time).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from reference import drain_free_list, observe

from pagedkv import (
    BlockManager,
    DuplicateSequence,
    InvalidArgument,
    OutOfBlocks,
    PagedKVError,
    UnknownSequence,
    block_manager,
)

B = 4
LIVE = ["alpha", "beta", "gamma"]
PROBES = [[*range(10), *[77] * 18], [*range(8), 50, 51, 52, 53, 54, 77, 77, 77], list(range(4))]


def scenario(caching: bool) -> BlockManager:
    """Three live sequences, a shared partial block, a cached-free block, a few free blocks."""
    bm = BlockManager(num_blocks=10, block_size=B, enable_prefix_caching=caching)
    bm.allocate("alpha", list(range(10)))  # [0, 1, 2]
    bm.fork("alpha", "beta")  # shares all three, block 2 partial
    bm.allocate("gamma", [*range(8), 50, 51, 52, 53, 54])  # prefix-hits alpha's two full blocks when caching
    bm.allocate("tmp", [60, 61, 62, 63, 64])
    bm.free("tmp")  # a cached-free block (when caching) at the free-list tail
    return bm


def assert_failure_changes_nothing(
    caching: bool, op: Callable[[BlockManager], object], error: type[PagedKVError]
) -> PagedKVError:
    bm, twin = scenario(caching), scenario(caching)
    before = observe(bm, LIVE)
    with pytest.raises(error) as info:
        op(bm)
    assert observe(bm, LIVE) == before
    bm.check_invariants()
    for s in LIVE:
        bm.free(s)
        twin.free(s)
    assert observe(bm, []) == observe(twin, [])
    for prompt in PROBES:
        assert bm.allocate("probe", prompt) == twin.allocate("probe", prompt)
        assert bm.block_table("probe") == twin.block_table("probe")
        bm.free("probe")
        twin.free("probe")
    assert drain_free_list(bm) == drain_free_list(twin)
    assert observe(bm, []) == observe(twin, [])
    return info.value


FAILING_CALLS: list[tuple[str, Callable[[BlockManager], object], type[PagedKVError], str]] = [
    ("allocate-duplicate", lambda bm: bm.allocate("alpha", 3), DuplicateSequence, "alpha"),
    ("fork-onto-live-child", lambda bm: bm.fork("gamma", "beta"), DuplicateSequence, "beta"),
    ("fork-onto-itself", lambda bm: bm.fork("alpha", "alpha"), DuplicateSequence, "alpha"),
    ("fork-unknown-parent", lambda bm: bm.fork("ghost-17", "new"), UnknownSequence, "ghost-17"),
    ("free-unknown", lambda bm: bm.free("ghost-17"), UnknownSequence, "ghost-17"),
    ("append-unknown", lambda bm: bm.append("ghost-17"), UnknownSequence, "ghost-17"),
    ("block-table-unknown", lambda bm: bm.block_table("ghost-17"), UnknownSequence, "ghost-17"),
    ("num-tokens-unknown", lambda bm: bm.num_tokens("ghost-17"), UnknownSequence, "ghost-17"),
    ("translate-unknown", lambda bm: bm.translate("ghost-17", 0), UnknownSequence, "ghost-17"),
    ("slot-unknown", lambda bm: bm.slot("ghost-17", 0), UnknownSequence, "ghost-17"),
    ("batch-unknown", lambda bm: bm.append_batch(["alpha", "beta", "ghost-17"]), UnknownSequence, "ghost-17"),
    ("translate-past-end", lambda bm: bm.translate("alpha", 10), InvalidArgument, "10"),
    ("translate-far-past-end", lambda bm: bm.translate("gamma", 4321), InvalidArgument, "4321"),
    ("translate-negative", lambda bm: bm.translate("alpha", -1), InvalidArgument, "-1"),
    ("slot-past-end", lambda bm: bm.slot("alpha", 10), InvalidArgument, "10"),
    ("slot-negative", lambda bm: bm.slot("alpha", -3), InvalidArgument, "-3"),
    ("allocate-zero", lambda bm: bm.allocate("new", 0), InvalidArgument, "0"),
    ("allocate-negative", lambda bm: bm.allocate("new", -3), InvalidArgument, "-3"),
    ("allocate-empty-list", lambda bm: bm.allocate("new", []), InvalidArgument, ""),
    ("append-zero", lambda bm: bm.append("beta", 0), InvalidArgument, "0"),
    ("append-negative", lambda bm: bm.append("beta", -2), InvalidArgument, "-2"),
    ("append-empty-list", lambda bm: bm.append("beta", []), InvalidArgument, ""),
    ("can-allocate-zero", lambda bm: bm.can_allocate(0), InvalidArgument, "0"),
    ("can-allocate-negative", lambda bm: bm.can_allocate(-5), InvalidArgument, "-5"),
    ("ref-count-negative", lambda bm: bm.ref_count(-1), InvalidArgument, "-1"),
    ("ref-count-past-pool", lambda bm: bm.ref_count(10), InvalidArgument, "10"),
    ("batch-ids-length", lambda bm: bm.append_batch(["alpha", "beta"], [1]), InvalidArgument, "1"),
    (
        "allocate-count-too-big",
        lambda bm: bm.allocate("new", (bm.num_free_blocks + 1) * B),
        OutOfBlocks,
        "",
    ),
    (
        "allocate-ids-too-big",
        lambda bm: bm.allocate("new", [*range(8), *[77] * (bm.num_free_blocks * B + 1)]),
        OutOfBlocks,
        "",
    ),
    # beta's last block is shared and partial: the append needs a copy plus num_free_blocks new blocks
    ("append-count-with-copy", lambda bm: bm.append("beta", 4 * bm.num_free_blocks + 2), OutOfBlocks, ""),
    (
        "append-ids-with-copy",
        lambda bm: bm.append("beta", [77] * (4 * bm.num_free_blocks + 2)),
        OutOfBlocks,
        "",
    ),
    (
        "append-ids-no-copy",
        lambda bm: bm.append("gamma", [77] * (4 * bm.num_free_blocks + 4)),
        OutOfBlocks,
        "",
    ),
]


@pytest.mark.parametrize("caching", [False, True], ids=["plain", "prefix-caching"])
@pytest.mark.parametrize(
    ("op", "error", "named"), [c[1:] for c in FAILING_CALLS], ids=[c[0] for c in FAILING_CALLS]
)
def test_failed_call_raises_a_typed_error_and_changes_nothing(
    caching: bool, op: Callable[[BlockManager], object], error: type[PagedKVError], named: str
) -> None:
    exc = assert_failure_changes_nothing(caching, op, error)
    assert isinstance(exc, PagedKVError)
    assert named in str(exc), f"{type(exc).__name__} message {str(exc)!r} does not name {named!r}"


def test_double_free_raises_unknown_sequence() -> None:
    bm = scenario(caching=True)
    bm.free("gamma")
    after_first = observe(bm, ["alpha", "beta"])
    with pytest.raises(UnknownSequence, match="gamma"):
        bm.free("gamma")
    assert observe(bm, ["alpha", "beta"]) == after_first
    bm.check_invariants()


def test_an_id_is_unknown_after_free_everywhere() -> None:
    bm = scenario(caching=False)
    bm.free("alpha")
    for call in (bm.block_table, bm.num_tokens, bm.append, bm.free):
        with pytest.raises(UnknownSequence):
            call("alpha")
    with pytest.raises(UnknownSequence):
        bm.fork("alpha", "delta")
    assert "delta" not in bm


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"num_blocks": 0}, ("num_blocks", "0")),
        ({"num_blocks": -5}, ("num_blocks", "-5")),
        ({"num_blocks": 4, "block_size": 0}, ("block_size", "0")),
        ({"num_blocks": 4, "block_size": -7}, ("block_size", "-7")),
        ({"num_blocks": 4, "watermark": -0.25}, ("watermark", "-0.25")),
        ({"num_blocks": 4, "watermark": 1.0}, ("watermark", "1.0")),
        ({"num_blocks": 4, "watermark": 1.5}, ("watermark", "1.5")),
    ],
)
def test_bad_configuration_is_rejected_by_name_and_value(kwargs: dict, named: tuple[str, str]) -> None:
    with pytest.raises(InvalidArgument) as info:
        BlockManager(**kwargs)
    for part in named:
        assert part in str(info.value)


def test_smallest_valid_configuration_works() -> None:
    bm = BlockManager(num_blocks=1, block_size=1, watermark=0.0)
    bm.allocate("s", 1)
    with pytest.raises(OutOfBlocks):
        bm.append("s")
    assert bm.translate("s", 0) == (0, 0)
    bm.free("s")
    assert bm.num_free_blocks == 1


def test_error_hierarchy() -> None:
    for error in (OutOfBlocks, UnknownSequence, DuplicateSequence, InvalidArgument):
        assert issubclass(error, PagedKVError)


def batch_scenario_boundaries() -> BlockManager:
    bm = BlockManager(num_blocks=6, block_size=2)
    for s in ("s0", "s1", "s2"):
        bm.allocate(s, 2)  # full blocks: the next token needs a new block
    bm.fork("s0", "s3")
    return bm  # 3 free blocks


def batch_scenario_shared_partial() -> BlockManager:
    bm = BlockManager(num_blocks=2, block_size=4)
    bm.allocate("p", 2)  # [0], partial
    bm.fork("p", "c1")
    bm.fork("p", "c2")
    return bm  # 1 free block; every writer but the last copies block 0


@pytest.mark.parametrize(
    ("make", "seqs"),
    [
        (batch_scenario_boundaries, ["s0", "s1", "s2", "s3"]),
        (batch_scenario_shared_partial, ["p", "c1", "c2"]),
        (batch_scenario_shared_partial, ["c2", "p"]),
    ],
)
def test_append_batch_is_all_or_nothing(make: Callable[[], BlockManager], seqs: list[str]) -> None:
    bm, twin = make(), make()
    live = seqs_of(twin)
    before = observe(bm, live)
    with pytest.raises(OutOfBlocks):
        bm.append_batch(seqs)
    assert observe(bm, live) == before
    bm.check_invariants()
    assert drain_free_list(bm) == drain_free_list(twin)


def seqs_of(bm: BlockManager) -> list[str]:
    return [s for s in ("s0", "s1", "s2", "s3", "p", "c1", "c2") if s in bm]


def test_append_batch_that_fits_exactly_succeeds() -> None:
    bm = batch_scenario_shared_partial()
    assert bm.append_batch(["p"]) == [(0, 1)]  # the one free block pays for p's copy
    assert bm.num_free_blocks == 0
    assert bm.ref_count(0) == 2  # c1 and c2 still share it


# ------------------------------------------------------------------ pools past the machine (issue 9)
def test_a_pool_larger_than_memory_is_refused_before_anything_is_allocated() -> None:
    for caching, per_block in ((False, 16), (True, 25)):
        with pytest.raises(InvalidArgument) as info:
            BlockManager(num_blocks=10**12, enable_prefix_caching=caching)
        message = str(info.value)
        assert "num_blocks=1,000,000,000,000" in message, message
        assert f"({per_block} bytes per block x 1,000,000,000,000 blocks)" in message, message
        assert "use fewer blocks" in message and "\n" not in message


def test_the_memory_check_is_bytes_per_block_times_blocks_against_physical_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(block_manager, "physical_memory_bytes", lambda: 16_000)
    assert BlockManager(num_blocks=1000).num_free_blocks == 1000  # 16 bytes per block x 1000: fits exactly
    with pytest.raises(
        InvalidArgument, match=r"needs 15\.6 KiB .*16 bytes per block x 1,001 blocks.* 15\.6 KiB"
    ):
        BlockManager(num_blocks=1001)
    with pytest.raises(InvalidArgument, match="25 bytes per block x 1,000 blocks"):
        BlockManager(num_blocks=1000, enable_prefix_caching=True)


def test_more_blocks_than_int_block_ids_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for memory in (None, 2**60):  # the OS does not say, or a machine that could hold the arrays
        monkeypatch.setattr(block_manager, "physical_memory_bytes", lambda memory=memory: memory)
        with pytest.raises(InvalidArgument, match="2,147,483,647 block ids"):
            BlockManager(num_blocks=2**31)
