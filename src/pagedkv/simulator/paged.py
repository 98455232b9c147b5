"""The paged cache: PagedAttention's `BlockManager` under the step loop, with preemption and sharing.

Memory is taken a block at a time, when a sequence crosses a block boundary. The loop does not append
token by token: each group's next crossing is an event on a heap, and at that tick every sequence of
the group catches the manager up with *one* ``append(seq, k)`` of the k tokens generated since its
last one. When no block is free, the newest resident request is preempted (as vLLM does): by
recompute (its blocks are freed and it is queued again; its prompt and the output so far are
prefilled when it resumes) or by swap (its blocks move to a CPU pool of `swap_blocks`; it is swapped
back in before it resumes; when the CPU pool is full it is recomputed instead, counted). Under vLLM
V0's scheduler (`SimConfig.scheduler == "v0"`), a decode step also needs one free block per sequence
of the groups it runs, so the newest are preempted while fewer are free.

A prompt prefilled in chunks (a token budget, chunked prefill) grows chunk by chunk in its first
sequence; the other sequences of the group fork it when the prefill completes.

Sharing is real: parallel samples are `fork`s of the prompt; beams are forked and pruned by the beam
model (`pagedkv.simulator.beams`); with prefix caching, prompts are allocated by token id (see
`token_ids`), so equal Mooncake prefixes hit the cache.

Invariants, at the end of every step:
- each decoding sequence has ``ceil(length / block_size)`` blocks (the manager's token count may lag
  behind the length; it is caught up at the next event, within the blocks already held); a
  prefilling group's first sequence holds exactly its computed tokens;
- no partly filled block is shared: the copy-on-write of a fork happens in the step of the first
  write, so each shared block is full and saves exactly `block_size` slots;
- `logical_blocks` is the sum of every resident sequence's blocks and `internal_slots` the final-block
  padding of the groups already in their last block.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pagedkv.block_manager import BlockManager
from pagedkv.errors import InvariantViolation, OutOfBlocks
from pagedkv.simulator.beams import BeamModel
from pagedkv.simulator.cache import Admission, KVCache, Preemption, Usage
from pagedkv.simulator.config import SimConfig, SimulationConfigError
from pagedkv.simulator.group import Group
from pagedkv.simulator.token_ids import output_token_ids, prompt_token_ids
from pagedkv.simulator.workload import Request

if TYPE_CHECKING:
    from pagedkv.simulator.paged_counts import CountingPagedCache

PREEMPTION_MODES = ("recompute", "swap")
_BEAM, _BOUNDARY = 0, 1  # event kinds; at equal ticks, beams fork before blocks are crossed


def check_paged_options(
    kv_slots: int, block_size: int, watermark: float, preemption: str, swap_slots: int | None
) -> None:
    """The arguments both paged caches take, checked the same way (`SimulationConfigError`)."""
    if block_size < 1:
        raise SimulationConfigError(f"block_size={block_size} must be >= 1 token")
    if kv_slots < block_size:
        raise SimulationConfigError(
            f"kv_slots={kv_slots:,} is smaller than one block of block_size={block_size} slots"
        )
    if not 0.0 <= watermark < 1.0:
        raise SimulationConfigError(f"watermark={watermark!r} must be in [0, 1)")
    if preemption not in PREEMPTION_MODES:
        raise SimulationConfigError(f"preemption={preemption!r} must be one of {', '.join(PREEMPTION_MODES)}")
    if swap_slots is not None and swap_slots < 0:
        raise SimulationConfigError(f"swap_slots={swap_slots} must be >= 0 (0 disables swapping)")


def describe_pool(cache: PagedCache | CountingPagedCache) -> str:
    """``9,000 blocks x 16 slots`` (and what is left over, and the swap pool when swapping), for both
    paged caches."""
    unused = cache.capacity_slots - cache.num_blocks * cache.block_size
    tail = f" ({unused:,} slots left over)" if unused else ""
    swap = f", CPU swap pool {cache.swap_blocks:,} blocks" if cache.preemption == "swap" else ""
    return f"{cache.num_blocks:,} blocks x {cache.block_size} slots{tail}{swap}"


@dataclass(eq=False, slots=True)
class _Record:
    """Everything the cache knows of one group, from its first admission to its release.

    It outlives a preemption (the sequence ids, prompt ids and beam stream are kept for the resume);
    `generation` changes whenever the group stops being resident, so events queued before are stale.
    """

    group: Group
    seqs: list[int]  # BlockManager sequence ids
    prompt_ids: list[int] | None = None  # prefix caching: the prompt's token ids, made once
    beams: BeamModel | None = None
    generation: int = 0
    resident: bool = False
    prefilled: int = -1  # while prefilling: tokens the first sequence holds; -1 once decoding
    blocks: int = 0  # logical blocks of its sequences while resident
    internal: int = 0  # final-block padding counted as internal fragmentation
    swapped_blocks: int = 0
    last_tick: int = -1  # while decoding: the tick of its last token (no beam forks after it)
    crossed: int = -1  # the last tick in which its sequences took a block for a boundary crossing


class PagedCache(KVCache):
    """`kv_slots` token slots as ``kv_slots // block_size`` blocks managed by a `BlockManager`.

    Args:
        kv_slots: GPU KV capacity in token slots (the same number every cache in a comparison gets).
        block_size: tokens per block.
        enable_prefix_caching, watermark: passed to `BlockManager`.
        preemption: "recompute" or "swap".
        swap_slots: CPU swap pool in token slots (None: as large as the GPU pool).
    """

    def __init__(
        self,
        kv_slots: int,
        block_size: int = 16,
        *,
        enable_prefix_caching: bool = False,
        watermark: float = 0.0,
        preemption: str = "recompute",
        swap_slots: int | None = None,
        name: str = "paged",
    ) -> None:
        check_paged_options(kv_slots, block_size, watermark, preemption, swap_slots)
        super().__init__(name, kv_slots)
        self.block_size = block_size
        self.num_blocks = kv_slots // block_size
        self.bm = BlockManager(self.num_blocks, block_size, enable_prefix_caching, watermark)
        self.preemption = preemption
        self.swap_blocks = self.num_blocks if swap_slots is None else swap_slots // block_size
        self.logical_blocks = 0
        self.internal_slots = 0
        self.swap_used = self.swap_peak = 0
        self.recomputes = self.swap_outs = self.swap_ins = self.swap_fallbacks = 0
        self.prompt_tokens = self.prompt_hit_tokens = 0
        self._prefix = enable_prefix_caching
        self._beam_prob = 0.0
        self._seed = 0
        self._v0 = False
        self._records: dict[int, _Record] = {}  # every group admitted and not yet released
        self._resident: dict[int, _Record] = {}  # admission order: the newest is last
        self._prefilling: dict[int, _Record] = {}  # resident groups whose prefill is not complete
        self._events: list[tuple[int, int, int, _Record, int]] = []  # (tick, kind, tiebreak, record, gen)
        self._tiebreak = itertools.count()
        self._seq_ids = itertools.count()

    # ------------------------------------------------------------------ the loop's view

    def usage(self) -> Usage:
        held_blocks = self.num_blocks - self.bm.num_free_blocks
        saved = (self.logical_blocks - held_blocks) * self.block_size
        prefill = sum(r.prefilled * len(self._live(r)) for r in self._prefilling.values())
        return Usage(held_blocks * self.block_size, self.internal_slots, 0, saved, prefill)

    def sequences(self, request_id: int) -> list[int]:
        """The `BlockManager` sequence ids of a running request's sequences (a copy): for viewers."""
        return list(self._records[request_id].seqs)

    def check_fits(self, request: Request, num_seqs: int) -> None:
        needed = self.blocks_for(request.prompt_len, request.total_len, num_seqs)
        if not self.bm.can_allocate(needed * self.block_size):  # called by `start`: the pool is empty
            usable = self.num_blocks - int(self.bm.watermark * self.num_blocks)
            raise SimulationConfigError(
                f"request {request.request_id} (prompt {request.prompt_len:,} + output "
                f"{request.output_len:,} tokens, {num_seqs} sequence(s)) needs {needed:,} blocks of "
                f"{self.block_size} but the paged pool has {self.num_blocks:,} ({usable:,} usable below the "
                "watermark): the pool is smaller than one request; give the caches more KV slots, "
                "or truncate/drop long requests"
            )

    def blocks_for(self, prompt_len: int, length: int, num_seqs: int) -> int:
        """Blocks `num_seqs` sequences of `length` tokens need when they share only the prompt.

        The prompt's full blocks are shared; each sequence owns the rest (its copy of the prompt's
        partial block included, copied on its first write).
        """
        shared = prompt_len // self.block_size
        return shared + num_seqs * (-(-length // self.block_size) - shared)

    def describe(self) -> str:
        return describe_pool(self)

    def counters(self) -> dict[str, int | float]:
        stats = self.bm.stats
        return {
            "preemptions_recompute": self.recomputes,
            "swap_outs": self.swap_outs,
            "swap_ins": self.swap_ins,
            "swap_fallbacks": self.swap_fallbacks,
            "swap_peak_blocks": self.swap_peak,
            "cow_copies": stats.cow_copies,
            "prompt_tokens_queried": self.prompt_tokens,
            "prompt_hit_tokens": self.prompt_hit_tokens,
            "evicted_blocks": stats.evicted_blocks,
        }

    # ------------------------------------------------------------------ admission, prefill, release

    def start(self, config: SimConfig, requests: list[Request]) -> None:
        super().start(config, requests)
        self._beam_prob = config.beam_prune_prob if config.beam_search else 0.0
        self._seed = config.seed
        self._v0 = config.scheduler == "v0"

    def admit(self, group: Group, tick: int, budget: int | None) -> Admission | None:
        record = self._records.get(group.gid)
        if record is None:
            seqs = [next(self._seq_ids) for _ in range(group.num_seqs)]
            record = self._records[group.gid] = _Record(group, seqs)
        target = group.resume_len
        if group.swapped:  # swap-in: its blocks come back; nothing to compute
            if self._materialize(record, target + 1) is None:
                return None
            self.swap_used -= record.swapped_blocks
            record.swapped_blocks = 0
            self.swap_ins += 1
            self._enter(record)
            self._start_decoding(record, tick, target + 1)
            return Admission(0, 0, True)
        if budget is not None:
            ids = self._ids(record, record.seqs[0], 0, target) if self._prefix else []
            cached = self.bm.cached_prefix(ids)
            if self._work(record, cached) > budget:
                return self._admit_chunk(record, cached + min(budget, self._split(record) - cached))
        hits = self._materialize(record, target + 1)
        if hits is None:
            return None
        self._count_prompt(group, hits)
        self._enter(record)
        self._start_decoding(record, tick, target + 1)
        return Admission(hits, self._work(record, hits), True)

    def extend(self, group: Group, tick: int, budget: int) -> tuple[Admission, list[Preemption]]:
        record = self._resident[group.gid]
        preempted: list[Preemption] = []
        have, target, seqs = record.prefilled, group.resume_len, record.seqs
        split, n = self._split(record), len(seqs)
        work = self._work(record, have)
        if work <= budget:  # the rest of the prefill, and this step's token
            if not self._prefill_to(record, target + 1, tick, preempted):
                return Admission(0, 0, False), preempted
            self._start_decoding(record, tick, target + 1)
            return Admission(0, work, True), preempted
        spent = 0
        if have < split:  # the shared prompt, in the first sequence
            spent = min(budget, split - have)
            if not self._append(record, seqs[0], have, have + spent, tick, preempted):
                return Admission(0, 0, False), preempted
            have += spent
            record.prefilled = have
            self._fork_if_ready(record)
        per_seq = (budget - spent) // n if have >= split else 0  # each sequence's own tokens (recompute)
        if per_seq:
            if not self._prefill_to(record, have + per_seq, tick, preempted):
                return Admission(0, 0, False), preempted
            have += per_seq
            spent += n * per_seq
        record.prefilled = have
        self._set_blocks(record, sum(len(self.bm.block_table(seq)) for seq in self._live(record)))
        return Admission(0, spent, False), preempted

    def release(self, group: Group) -> None:
        record = self._records.pop(group.gid)
        self._drop(record)

    def _split(self, record: _Record) -> int:
        """Tokens the first sequence prefills alone before the others fork it: the whole prefill for one
        sequence, the shared prompt for several (each then recomputes its own output, if any)."""
        group = record.group
        return group.resume_len if group.num_seqs == 1 else min(group.prompt_len, group.resume_len)

    def _work(self, record: _Record, done: int) -> int:
        """Tokens left to compute before the prefill completes when `done` tokens a sequence are held."""
        split, target, n = self._split(record), record.group.resume_len, record.group.num_seqs
        return max(split - done, 0) + n * (target - max(done, split))

    def _admit_chunk(self, record: _Record, tokens: int) -> Admission | None:
        """Admit with the first sequence holding the prompt's first `tokens` (its cached prefix included)."""
        seq = record.seqs[0]
        chunk = self._ids(record, seq, 0, tokens) if self._prefix else tokens
        if not self.bm.can_allocate(chunk):
            return None
        hits = self.bm.allocate(seq, chunk)
        self._count_prompt(record.group, hits)
        self._enter(record, prefilled=tokens)
        self._fork_if_ready(record)
        self._set_blocks(record, sum(len(self.bm.block_table(seq)) for seq in self._live(record)))
        return Admission(hits, tokens - hits, False)

    def _fork_if_ready(self, record: _Record) -> None:
        """Once the shared prompt is prefilled, the other sequences fork the first."""
        seqs = record.seqs
        if len(seqs) > 1 and record.prefilled >= self._split(record) and seqs[1] not in self.bm:
            for seq in seqs[1:]:
                self.bm.fork(seqs[0], seq)

    def _prefill_to(self, record: _Record, length: int, tick: int, preempted: list[Preemption]) -> bool:
        """Bring every sequence of a prefilling group to `length` tokens (the first sequence writes the
        shared prompt; the others fork it); False when the group itself had to be preempted."""
        seqs, have, split = record.seqs, record.prefilled, self._split(record)
        first = seqs[0]
        if have < split and not self._append(record, first, have, min(split, length), tick, preempted):
            return False
        record.prefilled = max(have, min(split, length))
        self._fork_if_ready(record)
        base = max(have, split)
        return all(
            base >= length or self._append(record, seq, self.bm.num_tokens(seq), length, tick, preempted)
            for seq in seqs
        )

    def _count_prompt(self, group: Group, hits: int) -> None:
        if group.preemptions == 0 and self._prefix:
            self.prompt_tokens += group.prompt_len
            self.prompt_hit_tokens += min(hits, group.prompt_len)

    def _materialize(self, record: _Record, length: int) -> int | None:
        """Allocate the group's sequences at `length` tokens; prompt-cache hits, or None if no room."""
        bm, group, seqs = self.bm, record.group, record.seqs
        prompt = min(group.prompt_len, length)
        if len(seqs) == 1:
            tokens = self._ids(record, seqs[0], 0, length) if self._prefix else length
            if not bm.can_allocate(tokens):
                return None
            return bm.allocate(seqs[0], tokens)
        if not bm.can_allocate(self.blocks_for(prompt, length, len(seqs)) * self.block_size):
            return None
        hits = bm.allocate(seqs[0], self._ids(record, seqs[0], 0, prompt) if self._prefix else prompt)
        for seq in seqs[1:]:
            bm.fork(seqs[0], seq)
        for seq in seqs:
            bm.append(seq, self._ids(record, seq, prompt, length) if self._prefix else length - prompt)
        return hits

    def _enter(self, record: _Record, prefilled: int = -1) -> None:
        """Make the record resident (the newest in admission order), prefilling or (-1) decoding."""
        record.resident = True
        record.prefilled = prefilled
        record.blocks = record.internal = 0
        self._resident[record.group.gid] = record
        if prefilled >= 0:
            self._prefilling[record.group.gid] = record

    def _live(self, record: _Record) -> list[int]:
        """The sequences present in the manager: only the first while it prefills the shared prompt."""
        if record.prefilled >= 0 and record.prefilled < self._split(record):
            return record.seqs[:1]
        return record.seqs

    def _set_blocks(self, record: _Record, blocks: int) -> None:
        self.logical_blocks += blocks - record.blocks
        record.blocks = blocks

    def _start_decoding(self, record: _Record, tick: int, length: int) -> None:
        """The prefill is complete: `length` tokens a sequence; queue the first growth events."""
        record.prefilled = -1
        group = record.group
        record.last_tick = tick + group.final_len - length
        self._prefilling.pop(group.gid, None)
        blocks = -(-length // self.block_size)
        self._set_blocks(record, group.num_seqs * blocks)
        self._enter_block(record, blocks)
        self._schedule_boundary(record, tick, length)
        if self._beam_prob > 0:
            if record.beams is None:
                record.beams = BeamModel(self._beam_prob, self._seed, group.gid)
            record.beams.restart(tick, group.num_seqs)
            self._schedule_beams(record)

    def _drop(self, record: _Record) -> None:
        self._free_all(record)
        del self._resident[record.group.gid]
        self._prefilling.pop(record.group.gid, None)
        self.logical_blocks -= record.blocks
        self.internal_slots -= record.internal
        record.blocks = record.internal = 0
        record.resident = False
        record.generation += 1
        self.releases += 1

    def _free_all(self, record: _Record) -> None:
        for seq in self._live(record):
            self.bm.free(seq)

    # ------------------------------------------------------------------ growth events

    def grow(self, tick: int) -> list[Preemption]:
        preempted: list[Preemption] = []
        events = self._events
        while events and events[0][0] <= tick:
            _, kind, _, record, generation = heapq.heappop(events)
            if generation != record.generation:
                continue  # the group finished or was preempted since this was queued
            if kind == _BOUNDARY:
                self._cross_boundary(record, tick, preempted)
            else:
                self._prune_beams(record, tick, preempted)
        if self._v0:
            self._keep_a_block_per_sequence(tick, preempted)
        return preempted

    def _keep_a_block_per_sequence(self, tick: int, preempted: list[Preemption]) -> None:
        """vLLM V0 runs a decode only with a free block for each sequence of the group it schedules."""
        while self._resident:
            newest = next(reversed(self._resident.values()))
            if self.bm.num_free_blocks >= newest.group.num_seqs:
                return
            self._preempt(newest, tick, preempted)

    def _schedule_boundary(self, record: _Record, tick: int, length: int) -> None:
        """Queue the tick at which the group's sequences first need one more block."""
        crossing = -(-length // self.block_size) * self.block_size + 1
        if crossing <= record.group.final_len:
            self._push(tick + crossing - length, _BOUNDARY, record)

    def _cross_boundary(self, record: _Record, tick: int, preempted: list[Preemption]) -> None:
        group = record.group
        length = group.length(tick)
        for seq in record.seqs:
            have = self.bm.num_tokens(seq)
            if have < length and not self._append(record, seq, have, length, tick, preempted):
                return  # the group itself was preempted
        self._set_blocks(record, record.blocks + group.num_seqs)
        record.crossed = tick
        self._enter_block(record, -(-length // self.block_size))
        if length + self.block_size <= group.final_len:
            self._push(tick + self.block_size, _BOUNDARY, record)

    def _enter_block(self, record: _Record, blocks: int) -> None:
        """Count the final block's never-used slots as internal fragmentation once it is reached."""
        group = record.group
        final_blocks = -(-group.final_len // self.block_size)
        if blocks == final_blocks:
            padding = group.num_seqs * (final_blocks * self.block_size - group.final_len)
            self.internal_slots += padding - record.internal
            record.internal = padding

    def _append(
        self, record: _Record, seq: int, have: int, length: int, tick: int, preempted: list[Preemption]
    ) -> bool:
        """Append positions ``have .. length - 1`` to `seq`, preempting the newest groups while no block
        is free; False when the record's own group had to be preempted."""
        tokens = self._ids(record, seq, have, length) if self._prefix else length - have
        while True:
            try:
                self.bm.append(seq, tokens)
                return True
            except OutOfBlocks:
                victim = next(reversed(self._resident.values()))
                self._preempt(victim, tick, preempted)
                if victim is record:
                    return False

    def _preempt(self, record: _Record, tick: int, preempted: list[Preemption]) -> None:
        """Take the group off the GPU before it generates this step's token (swap, else recompute)."""
        group = record.group
        held = group.length(tick - 1) if record.prefilled < 0 else record.prefilled
        swap = False
        if self.preemption == "swap" and record.prefilled < 0:
            # what it held before this tick: a block taken for this tick's token is not swapped
            blocks = len({block for seq in record.seqs for block in self.bm.block_table(seq)})
            blocks -= group.num_seqs if record.crossed == tick else 0
            swap = self.swap_used + blocks <= self.swap_blocks
            if swap:
                record.swapped_blocks = blocks
                self.swap_used += blocks
                self.swap_peak = max(self.swap_peak, self.swap_used)
                self.swap_outs += 1
            else:
                self.swap_fallbacks += 1
        if not swap:
            self.recomputes += 1
            if self._prefix:  # record the contents so the recompute can hit its own freed blocks
                for seq in self._live(record):
                    have = self.bm.num_tokens(seq)
                    if have < held:
                        self.bm.append(seq, self._ids(record, seq, have, held))
        self._drop(record)
        preempted.append(Preemption(group, swap))

    # ------------------------------------------------------------------ beam search

    def _schedule_beams(self, record: _Record) -> None:
        assert record.beams is not None
        first = record.beams.next_tick
        if first <= record.last_tick:
            self._push(first, _BEAM, record)

    def _prune_beams(self, record: _Record, tick: int, preempted: list[Preemption]) -> None:
        """Replace each beam pruned at `tick` by a fork of another beam as it stood before the tick.

        All forks are taken before any pruned beam is freed and before any token of this tick is
        written, so a beam forked twice in one tick yields identical copies, as it should.
        """
        assert record.beams is not None
        seqs = record.seqs
        before = record.group.length(tick - 1)
        old = list(seqs)
        forks = record.beams.prune(tick)
        writers: set[int] = set()
        for i, j in forks:
            parent = old[j]
            have = self.bm.num_tokens(parent)
            if have < before:  # within its blocks: never allocates
                self.bm.append(
                    parent, self._ids(record, parent, have, before) if self._prefix else before - have
                )
            seqs[i] = next(self._seq_ids)
            self.bm.fork(parent, seqs[i])
            writers.update((parent, seqs[i]))
        for i, _ in forks:
            self.bm.free(old[i])
        if before % self.block_size:  # this tick's token goes into a shared, partly filled block
            for seq in seqs:
                if seq in writers and not self._append(record, seq, before, before + 1, tick, preempted):
                    return
        self._schedule_beams(record)

    # ------------------------------------------------------------------ helpers

    def _push(self, tick: int, kind: int, record: _Record) -> None:
        heapq.heappush(self._events, (tick, kind, next(self._tiebreak), record, record.generation))

    def _ids(self, record: _Record, seq: int, start: int, stop: int) -> list[int]:
        """Token ids of positions ``start .. stop - 1`` of `seq` (prefix caching only)."""
        prompt = record.prompt_ids
        if prompt is None:
            prompt = record.prompt_ids = prompt_token_ids(record.group.request)
        ids = prompt[start : min(stop, len(prompt))]
        if stop > len(prompt):
            ids.extend(output_token_ids(seq, max(start, len(prompt)), stop))
        return ids

    def check(self, tick: int) -> None:
        """Check the module invariants against the block manager (slow: every block of every sequence).

        Also checks that `internal_slots` equals the final-block padding recomputed from the lengths:
        the slots of a group's last block past its final length, once the group has reached it.
        """
        self.bm.check_invariants()
        size, logical, held, internal = self.block_size, 0, set(), 0
        for record in self._resident.values():
            group = record.group
            if record.prefilled >= 0:
                for seq in self._live(record):
                    table = self.bm.block_table(seq)
                    if self.bm.num_tokens(seq) != record.prefilled:
                        raise InvariantViolation(
                            f"{self.name}: prefilling request {group.gid}: sequence {seq} holds "
                            f"{self.bm.num_tokens(seq)} tokens, expected {record.prefilled}"
                        )
                    logical += len(table)
                    held.update(table)
                continue
            length = group.length(tick)
            final_blocks = -(-group.final_len // size)
            if -(-length // size) == final_blocks:
                internal += group.num_seqs * (final_blocks * size - group.final_len)
            for seq in record.seqs:
                table = self.bm.block_table(seq)
                if len(table) != -(-length // size) or self.bm.num_tokens(seq) > length:
                    raise InvariantViolation(
                        f"{self.name}: sequence {seq} of request {group.gid} has {len(table)} blocks and "
                        f"{self.bm.num_tokens(seq)} tokens in the manager at length {length} (tick {tick})"
                    )
                if length % size and self.bm.ref_count(table[-1]) > 1:
                    raise InvariantViolation(f"{self.name}: a partly filled block {table[-1]} is shared")
                logical += len(table)
                held.update(table)
        if logical != self.logical_blocks or len(held) != self.num_blocks - self.bm.num_free_blocks:
            raise InvariantViolation(
                f"{self.name}: logical blocks {self.logical_blocks} (actual {logical}), held blocks "
                f"{self.num_blocks - self.bm.num_free_blocks} (referenced {len(held)}) at tick {tick}"
            )
        if internal != self.internal_slots:
            raise InvariantViolation(
                f"{self.name}: internal fragmentation {self.internal_slots} slots, but the groups in their "
                f"final block leave {internal} slots of it unused (tick {tick})"
            )
