"""A seeded run of over a million random operations, checked against the reference model as it goes.

Shaped like serving traffic: prompts arrive (with prefix caching, most of them start with one of a few shared
system prompts), every running sequence decodes one token per step through ``append_batch``, some sequences
fork (parallel sampling), some get a burst of tokens through ``append``, finished or preempted ones are freed.
Every call's result (hit count, copy-on-write pairs, OutOfBlocks or not) is compared with the reference as
it happens; every 50,000 operations the whole state is compared and ``check_invariants`` runs. An operation
is one call, except that ``append_batch`` counts one per sequence it appends to.
"""

from __future__ import annotations

import random

import pytest
from reference import NoRoom, Reference, assert_matches

from pagedkv import BlockManager, OutOfBlocks

OPERATIONS = 1_000_000
CHECK_EVERY = 50_000
NUM_BLOCKS = 2048
BLOCK_SIZE = 16
WATERMARK = 1 / 64  # 32 blocks, exactly
MAX_RUNNING = 160


class Run:
    """One seeded run: the manager, the reference, and the live sequences in a random-pick friendly list."""

    def __init__(self, caching: bool, seed: int) -> None:
        self.rng = random.Random(seed)
        self.bm = BlockManager(NUM_BLOCKS, BLOCK_SIZE, enable_prefix_caching=caching, watermark=WATERMARK)
        self.ref = Reference(NUM_BLOCKS, BLOCK_SIZE, caching, WATERMARK)
        self.caching = caching
        self.live: list[int] = []
        self.next_id = 0
        self.ops = 0
        self.out_of_blocks = 0
        self.system_prompts = [
            [self.rng.randrange(1000) for _ in range(self.rng.randint(16, 256))] for _ in range(6)
        ]

    def prompt(self) -> list[int] | int:
        rng = self.rng
        if not self.caching or rng.random() < 0.2:
            return rng.randint(1, 512)
        system = rng.choice(self.system_prompts)
        return system[: rng.randint(1, len(system))] + [
            rng.randrange(1000) for _ in range(rng.randint(0, 64))
        ]

    def allocate(self) -> None:
        tokens = self.prompt()
        fits = self.ref.can_allocate(tokens)
        assert self.bm.can_allocate(tokens) == fits, f"can_allocate at op {self.ops}"
        self.next_id += 1
        if fits:
            assert self.bm.allocate(self.next_id, tokens) == self.ref.allocate(self.next_id, tokens)
            self.live.append(self.next_id)
        else:
            self.out_of_blocks += 1
            with pytest.raises(OutOfBlocks):
                self.bm.allocate(self.next_id, tokens)
        self.ops += 1

    def remove(self, index: int) -> None:
        seq = self.live[index]
        self.live[index] = self.live[-1]
        self.live.pop()
        self.bm.free(seq)
        self.ref.free_seq(seq)
        self.ops += 1

    def decode_step(self) -> None:
        seqs = self.live if self.rng.random() < 0.8 else self.rng.sample(self.live, len(self.live) // 2 + 1)
        try:
            expected = self.ref.append_batch(seqs)
        except NoRoom:
            self.out_of_blocks += 1
            with pytest.raises(OutOfBlocks):
                self.bm.append_batch(seqs)
            self.remove(self.rng.randrange(len(self.live)))  # preempt one
        else:
            assert self.bm.append_batch(seqs) == expected, f"append_batch at op {self.ops}"
        self.ops += len(seqs)

    def burst(self) -> None:
        seq = self.rng.choice(self.live)
        count = self.rng.randint(1, 64)
        try:
            expected = self.ref.append(seq, count)
        except NoRoom:
            self.out_of_blocks += 1
            with pytest.raises(OutOfBlocks):
                self.bm.append(seq, count)
        else:
            assert self.bm.append(seq, count) == expected, f"append at op {self.ops}"
        self.ops += 1

    def fork(self) -> None:
        parent = self.rng.choice(self.live)
        self.next_id += 1
        self.bm.fork(parent, self.next_id)
        self.ref.fork(parent, self.next_id)
        self.live.append(self.next_id)
        self.ops += 1

    def step(self) -> None:
        r = self.rng.random()
        running = len(self.live)
        if running == 0 or (running < MAX_RUNNING and r < 0.3):
            self.allocate()
        elif r < 0.75:
            self.decode_step()
        elif r < 0.85:
            self.burst()
        elif r < 0.9 and running < MAX_RUNNING:
            self.fork()
        else:
            self.remove(self.rng.randrange(running))

    def check(self) -> None:
        assert_matches(self.bm, self.ref)
        bm = self.bm
        tables = [bm.block_table(s) for s in self.live]
        held = bm.num_blocks - bm.num_free_blocks
        assert sum(bm.num_tokens(s) for s in self.live) == sum(self.ref.lengths.values())
        assert sum(len(t) for t in tables) == sum(-(-bm.num_tokens(s) // BLOCK_SIZE) for s in self.live)
        assert len({b for t in tables for b in t}) == held
        sharing = sum(bm.ref_count(b) - 1 for b in range(bm.num_blocks) if bm.ref_count(b) > 1)
        assert sum(len(t) for t in tables) - sharing == held


@pytest.mark.slow
@pytest.mark.parametrize("caching", [False, True], ids=["plain", "prefix-caching"])
def test_a_million_random_operations_match_the_reference(caching: bool) -> None:
    run = Run(caching, seed=2309_06180 + caching)
    next_check = CHECK_EVERY
    while run.ops < OPERATIONS:
        run.step()
        if run.ops >= next_check:
            run.check()
            next_check += CHECK_EVERY
    run.check()
    assert run.out_of_blocks > 100  # the pool really was under pressure
    assert run.bm.stats.cow_copies > 1000
    if caching:
        assert run.bm.stats.hit_tokens > 0.3 * run.bm.stats.queried_tokens
        assert run.bm.stats.evicted_blocks > 1000
    for seq in list(run.live):
        run.bm.free(seq)
    assert run.bm.num_free_blocks == NUM_BLOCKS
    run.bm.check_invariants()
