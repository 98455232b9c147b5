"""Random call sequences against the reference model, with check_invariants() after every step.

Three machines, because the contract is exact in some places and deliberately open in one:
- ``Plain``: no prefix caching; every block id, ref count, copy-on-write pair and OutOfBlocks is predicted.
- ``PrefixCaching``: prompts from a two-letter alphabet (so prefixes really repeat), appends by count; hits,
  evictions and the LRU order are predicted exactly too.
- ``PrefixCachingIdAppends``: appends carry token ids. Whether (and when) an appended full block gets a hash
  is the implementation's choice, so hits are not predicted but *checked*: every reused block must hold
  exactly the prompt's tokens. Everything else (ids of new blocks, ref counts, free-list order) is exact.
Runs are derandomized and use no example database, so CI sees the same cases every time.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from reference import NoRoom, Reference, assert_matches, drain_free_list

from pagedkv import BlockManager, DuplicateSequence, InvalidArgument, OutOfBlocks, UnknownSequence

# (num_blocks, watermark): products are exact in binary, so the watermark in blocks is unambiguous.
SHAPES = st.sampled_from([(1, 0.0), (4, 0.0), (4, 0.5), (8, 0.0), (8, 0.25), (12, 0.0), (16, 0.25)])
ALPHABET = st.integers(0, 1)
SETTINGS = settings(
    max_examples=150,
    stateful_step_count=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class BlockManagerMachine(RuleBasedStateMachine):
    caching = False
    exact_hits = True
    id_appends = True
    count_allocations = True

    def __init__(self) -> None:
        super().__init__()
        self.bm: BlockManager | None = None
        self.ref: Reference
        self.next_id = 0
        self.prompts: list[list[int]] = []
        self.allocated_since_reset = False

    @initialize(shape=SHAPES, block_size=st.integers(1, 4))
    def start(self, shape: tuple[int, float], block_size: int) -> None:
        num_blocks, watermark = shape
        self.bm = BlockManager(
            num_blocks, block_size, enable_prefix_caching=self.caching, watermark=watermark
        )
        self.ref = Reference(num_blocks, block_size, self.caching, watermark, exact_hits=self.exact_hits)

    # ------------------------------------------------------------------ drawing arguments
    @property
    def block_size(self) -> int:
        return self.ref.block_size

    def live(self) -> list[int]:
        return sorted(self.ref.tables)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def draw_prompt(self, data: st.DataObject) -> list[int]:
        b = self.block_size
        if self.prompts and data.draw(st.booleans()):
            base = data.draw(st.sampled_from(self.prompts))
            head = base[: data.draw(st.integers(1, len(base)))]
            return head + data.draw(st.lists(ALPHABET, max_size=2 * b))
        return data.draw(st.lists(ALPHABET, min_size=1, max_size=3 * b + 1))

    def draw_allocation(self, data: st.DataObject) -> list[int] | int:
        if self.count_allocations and data.draw(st.booleans()):
            return data.draw(st.integers(1, (self.ref.num_blocks + 1) * self.block_size))
        return self.draw_prompt(data)

    def draw_append(self, data: st.DataObject) -> list[int] | int:
        if self.id_appends and data.draw(st.booleans()):
            return data.draw(st.lists(ALPHABET, min_size=1, max_size=2 * self.block_size + 1))
        return data.draw(st.integers(1, 2 * self.block_size + 1))

    # ------------------------------------------------------------------ rules
    @rule(data=st.data())
    def allocate(self, data: st.DataObject) -> None:
        tokens = self.draw_allocation(data)
        seq = self.new_id()
        if self.exact_hits or not self.caching:
            self.allocate_exact(seq, tokens)
        else:
            self.allocate_checked(seq, tokens)
        if seq in self.ref.tables:
            self.allocated_since_reset = True
            if isinstance(tokens, list):
                self.prompts.append(tokens)

    def allocate_exact(self, seq: int, tokens: list[int] | int) -> None:
        fits = self.ref.can_allocate(tokens)
        assert self.bm.can_allocate(tokens) == fits
        if fits:
            assert self.bm.allocate(seq, tokens) == self.ref.allocate(seq, tokens)
        else:
            with pytest.raises(OutOfBlocks):
                self.bm.allocate(seq, tokens)

    def allocate_checked(self, seq: int, tokens: list[int] | int) -> None:
        """Hits are the implementation's to choose; check them and follow them."""
        n = tokens if isinstance(tokens, int) else len(tokens)
        can = self.bm.can_allocate(tokens)
        try:
            hit = self.bm.allocate(seq, tokens)
        except OutOfBlocks:
            assert not can, "can_allocate said yes, allocate said OutOfBlocks"
            assert not self.ref.fits_without_hits(n), f"{n} tokens fit even with no prefix hit"
            return
        assert can, "can_allocate said no, allocate succeeded"
        assert hit % self.block_size == 0 and 0 <= hit <= n
        if isinstance(tokens, int):
            assert hit == 0
        hits = self.bm.block_table(seq)[: hit // self.block_size]
        assert self.ref.allocate(seq, tokens, observed_hits=hits) == hit

    @precondition(lambda self: self.ref.tables)
    @rule(data=st.data())
    def append(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(self.live()))
        tokens = self.draw_append(data)
        try:
            expected = self.ref.append(seq, tokens)
        except NoRoom:
            with pytest.raises(OutOfBlocks):
                self.bm.append(seq, tokens)
            return
        assert self.bm.append(seq, tokens) == expected

    @precondition(lambda self: self.ref.tables)
    @rule(data=st.data())
    def append_batch(self, data: st.DataObject) -> None:
        order = data.draw(st.permutations(self.live()))
        seqs = order[: data.draw(st.integers(1, len(order)))]
        ids = None
        if self.id_appends and data.draw(st.booleans()):
            ids = data.draw(st.lists(ALPHABET, min_size=len(seqs), max_size=len(seqs)))
        try:
            expected = self.ref.append_batch(seqs, ids)
        except NoRoom:
            with pytest.raises(OutOfBlocks):
                self.bm.append_batch(seqs, ids)
            return
        assert self.bm.append_batch(seqs, ids) == expected

    @precondition(lambda self: self.ref.tables)
    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        parent = data.draw(st.sampled_from(self.live()))
        child = self.new_id()
        self.ref.fork(parent, child)
        assert self.bm.fork(parent, child) is None

    @precondition(lambda self: self.ref.tables)
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(self.live()))
        self.ref.free_seq(seq)
        self.bm.free(seq)

    @rule(data=st.data())
    def can_allocate_changes_nothing(self, data: st.DataObject) -> None:
        tokens = self.draw_allocation(data)
        answer = self.bm.can_allocate(tokens)
        if self.exact_hits or not self.caching:
            assert answer == self.ref.can_allocate(tokens)

    @precondition(lambda self: self.ref.tables)
    @rule(data=st.data())
    def translate(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(self.live()))
        n = self.ref.lengths[seq]
        pos = data.draw(st.integers(-2, n + 1))
        if 0 <= pos < n:
            block, offset = self.ref.translate(seq, pos)
            assert self.bm.translate(seq, pos) == (block, offset)
            assert self.bm.slot(seq, pos) == block * self.block_size + offset
        else:
            with pytest.raises(InvalidArgument):
                self.bm.translate(seq, pos)
            with pytest.raises(InvalidArgument):
                self.bm.slot(seq, pos)

    @precondition(lambda self: self.ref.tables)
    @rule(data=st.data())
    def bad_ids(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(self.live()))
        with pytest.raises(DuplicateSequence):
            self.bm.allocate(seq, 1)
        with pytest.raises(DuplicateSequence):
            self.bm.fork(seq, seq)
        with pytest.raises(UnknownSequence):
            self.bm.append(-1)
        with pytest.raises(UnknownSequence):
            self.bm.free(-1)

    @invariant()
    def matches_reference(self) -> None:
        if self.bm is not None:
            assert_matches(self.bm, self.ref)


class CachingMachine(BlockManagerMachine):
    caching = True

    # at most one reset per allocation, so resets (each followed by a drain) do not crowd out the other rules
    @precondition(lambda self: self.allocated_since_reset)
    @rule()
    def reset_prefix_cache(self) -> None:
        expected = self.ref.reset_prefix_cache()
        assert self.bm.reset_prefix_cache() is expected
        self.allocated_since_reset = False
        if expected:
            self.relearn_free_order()

    def relearn_free_order(self) -> None:
        """The contract leaves the free-list order after a reset open: drain it, free it, adopt it."""
        order = drain_free_list(self.bm)
        self.bm.free("__drain__")
        self.ref.adopt_free_order(list(reversed(order)))
        self.ref.content = [None] * self.ref.num_blocks  # the drain wrote tokens of unknown value


class PlainMachine(BlockManagerMachine):
    pass


class PrefixCachingMachine(CachingMachine):
    id_appends = False  # when an appended block is hashed is open; PrefixCachingIdAppends covers it
    count_allocations = False


class PrefixCachingIdAppendsMachine(CachingMachine):
    exact_hits = False


TestPlain = PlainMachine.TestCase
TestPrefixCaching = PrefixCachingMachine.TestCase
TestPrefixCachingIdAppends = PrefixCachingIdAppendsMachine.TestCase
TestPlain.settings = TestPrefixCaching.settings = TestPrefixCachingIdAppends.settings = SETTINGS
