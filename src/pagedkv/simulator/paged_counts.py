"""The paged cache by arithmetic: `PagedCache`'s policy, counting blocks instead of tracking them.

Why. Without prefix caching and with one sequence per request, no outcome of a run depends on *which*
blocks a sequence holds, only on how many are free: admission, growth and preemption compare counts.
Tracking them through the `BlockManager` costs a Python call per block boundary crossed — over twenty
per ShareGPT request, most of the time of a million-request run. This cache does the same with
counters: a decoding sequence crosses a boundary every `block_size` ticks, so the sequences crossing at
tick ``t`` are those of phase ``t mod block_size`` (`_crossing[phase]` counts them), and a tick costs
O(1) until the pool runs short. Then the newest residents are preempted until the crossings fit, as
`PagedCache` does (the set preempted does not depend on the order the crossings are served in: it is
always the shortest suffix of the admission order that makes room).

Invariant: every count equals what `PagedCache` would hold at the end of every step — checked by the
differential test (tests/simulator/test_paged_counts.py) on workloads with preemption (recompute and
swap), chunked prefill and both schedulers; `standard_caches` uses this class for "paged" exactly when
`PagedCache` would give the same results (`counts_suffice`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pagedkv.errors import InvariantViolation
from pagedkv.simulator.cache import Admission, KVCache, Preemption, Usage
from pagedkv.simulator.config import SimConfig, SimulationConfigError
from pagedkv.simulator.group import Group
from pagedkv.simulator.paged import check_paged_options, describe_pool
from pagedkv.simulator.workload import Request


def counts_suffice(enable_prefix_caching: bool, num_seqs: int) -> bool:
    """Whether block counts alone decide a run: no prefix caching, one sequence per request."""
    return not enable_prefix_caching and num_seqs == 1


@dataclass(eq=False, slots=True)
class _Resident:
    group: Group
    blocks: int = 0  # while prefilling: blocks held (a decoding group's follow from its length)
    prefilled: int = -1  # while prefilling: tokens written; -1 once decoding
    base: int = 0  # while decoding: length at the end of tick t is t + base
    start: int = 0  # the tick it started decoding in
    last_cross: int = -1  # the tick of its last boundary crossing (-1: none left)
    internal: int = 0


class CountingPagedCache(KVCache):
    """`kv_slots` token slots as ``kv_slots // block_size`` blocks, counted (see the module docstring).

    Same arguments and results as `PagedCache` without prefix caching, for one sequence per request.
    """

    def __init__(
        self,
        kv_slots: int,
        block_size: int = 16,
        *,
        watermark: float = 0.0,
        preemption: str = "recompute",
        swap_slots: int | None = None,
        name: str = "paged",
    ) -> None:
        check_paged_options(kv_slots, block_size, watermark, preemption, swap_slots)
        super().__init__(name, kv_slots)
        self.block_size = block_size
        self.num_blocks = kv_slots // block_size
        self.watermark_blocks = int(watermark * self.num_blocks)
        self.preemption = preemption
        self.swap_blocks = self.num_blocks if swap_slots is None else swap_slots // block_size
        self.held_blocks = 0
        self.internal_slots = 0
        self.prefill_tokens = 0
        self.swap_used = self.swap_peak = 0
        self.recomputes = self.swap_outs = self.swap_ins = self.swap_fallbacks = 0
        self._v0 = False
        self._resident: dict[int, _Resident] = {}  # admission order: the newest is last
        self._swapped: dict[int, int] = {}  # request id -> blocks waiting in the CPU pool
        self._crossing = [0] * block_size  # decoding sequences still to cross, by phase (tick mod B)
        self._leaving: dict[int, list[_Resident]] = {}  # tick -> residents making their last crossing
        self._grown = -1  # the last tick whose crossings were served

    # ------------------------------------------------------------------ the loop's view

    def usage(self) -> Usage:
        return Usage(self.held_blocks * self.block_size, self.internal_slots, 0, 0, self.prefill_tokens)

    def describe(self) -> str:
        return describe_pool(self)

    def counters(self) -> dict[str, int | float]:
        return {
            "preemptions_recompute": self.recomputes,
            "swap_outs": self.swap_outs,
            "swap_ins": self.swap_ins,
            "swap_fallbacks": self.swap_fallbacks,
            "swap_peak_blocks": self.swap_peak,
            "cow_copies": 0,
            "prompt_tokens_queried": 0,
            "prompt_hit_tokens": 0,
            "evicted_blocks": 0,
        }

    def start(self, config: SimConfig, requests: list[Request]) -> None:
        if config.num_seqs != 1:
            raise SimulationConfigError(
                f"{type(self).__name__} counts one sequence per request; use PagedCache for "
                f"n={config.n} / beam_width={config.beam_width}"
            )
        super().start(config, requests)
        self._v0 = config.scheduler == "v0"

    def check_fits(self, request: Request, num_seqs: int) -> None:
        needed = -(-request.total_len // self.block_size)
        usable = self.num_blocks - self.watermark_blocks
        if needed > usable:
            raise SimulationConfigError(
                f"request {request.request_id} (prompt {request.prompt_len:,} + output "
                f"{request.output_len:,} tokens, {num_seqs} sequence(s)) needs {needed:,} blocks of "
                f"{self.block_size} but the paged pool has {self.num_blocks:,} ({usable:,} usable below the "
                "watermark): the pool is smaller than one request; give the caches more KV slots, "
                "or truncate/drop long requests"
            )

    # ------------------------------------------------------------------ admission and prefill

    @property
    def free_blocks(self) -> int:
        return self.num_blocks - self.held_blocks

    def admit(self, group: Group, tick: int, budget: int | None) -> Admission | None:
        size, target = self.block_size, group.resume_len
        chunk = budget is not None and budget < target and not group.swapped
        tokens = budget if chunk else target + 1
        assert tokens is not None
        blocks = -(-tokens // size)
        if blocks > self.free_blocks - self.watermark_blocks:
            return None
        record = _Resident(group, blocks)
        self._resident[group.gid] = record
        self.held_blocks += blocks
        if chunk:
            record.prefilled = tokens
            self.prefill_tokens += tokens
            return Admission(0, tokens, False)
        if group.swapped:
            self.swap_used -= self._swapped.pop(group.gid)
            self.swap_ins += 1
            computed = 0
        else:
            computed = target
        self._start_decoding(record, tick, target + 1)
        return Admission(0, computed, True)

    def extend(self, group: Group, tick: int, budget: int) -> tuple[Admission, list[Preemption]]:
        record = self._resident[group.gid]
        have, target = record.prefilled, group.resume_len
        done = target - have <= budget
        length = target + 1 if done else have + budget
        preempted: list[Preemption] = []
        needed = -(-length // self.block_size) - record.blocks
        while needed > self.free_blocks:
            victim = next(reversed(self._resident.values()))
            self._preempt(victim, tick, preempted)
            if victim is record:
                return Admission(0, 0, False), preempted
        self.held_blocks += needed
        record.blocks += needed
        self.prefill_tokens -= have
        if done:
            self._start_decoding(record, tick, length)
            return Admission(0, target - have, True), preempted
        record.prefilled = length
        self.prefill_tokens += length
        return Admission(0, budget, False), preempted

    def release(self, group: Group) -> None:
        self._drop(self._resident[group.gid], -(-group.final_len // self.block_size))

    def _start_decoding(self, record: _Resident, tick: int, length: int) -> None:
        """`length` tokens at the end of `tick`; join the phase of the boundaries it will cross."""
        size = self.block_size
        record.prefilled = -1
        record.base = length - tick
        record.start = tick
        last_length = (self._final_blocks(record) - 1) * size + 1  # where it enters its final block
        if last_length <= length:  # already there
            self._settle(record)
            return
        record.last_cross = last_length - record.base
        self._crossing[record.last_cross % size] += 1
        self._leaving.setdefault(record.last_cross, []).append(record)

    def _final_blocks(self, record: _Resident) -> int:
        return -(-record.group.final_len // self.block_size)

    def _settle(self, record: _Resident) -> None:
        """The record is in its final block: the slots past its final length are internal."""
        record.internal = self._final_blocks(record) * self.block_size - record.group.final_len
        self.internal_slots += record.internal
        record.last_cross = -1

    # ------------------------------------------------------------------ growth

    def grow(self, tick: int) -> list[Preemption]:
        preempted: list[Preemption] = []
        phase = tick % self.block_size
        needed = self._crossing[phase]
        if needed > self.free_blocks:
            needed = self._make_room(tick, phase, preempted)
        self.held_blocks += needed
        self._grown = tick
        for record in self._leaving.pop(tick, ()):
            if record.last_cross == tick:  # else preempted since
                self._crossing[phase] -= 1
                self._settle(record)
        if self._v0:
            while self._resident:
                if self.free_blocks >= 1:
                    break
                self._preempt(next(reversed(self._resident.values())), tick, preempted)
        return preempted

    def _make_room(self, tick: int, phase: int, preempted: list[Preemption]) -> int:
        """Preempt the newest residents until this tick's crossings fit; the crossings left."""
        while self._crossing[phase] > self.free_blocks:
            self._preempt(next(reversed(self._resident.values())), tick, preempted)
        return self._crossing[phase]

    def _preempt(self, record: _Resident, tick: int, preempted: list[Preemption]) -> None:
        """Take the newest group off the GPU in its state before this tick (swap, else recompute)."""
        group = record.group
        if record.prefilled >= 0:
            held = record.blocks
            swap = False
        else:
            size = self.block_size
            before = -(-(tick - 1 + record.base) // size)  # its blocks at the end of tick - 1
            # served its crossing of this tick already? (then it holds the new block too)
            crossed = (
                self._grown == tick and record.start < tick and -(-(tick + record.base) // size) > before
            )
            held = before + crossed
            if record.last_cross >= tick:  # boundaries still ahead: forget them
                self._crossing[record.last_cross % self.block_size] -= 1
                record.last_cross = -1
            swap = self.preemption == "swap" and self._swap_out(group, before)
        if not swap:
            self.recomputes += 1
        self._drop(record, held)
        preempted.append(Preemption(group, swap))

    def _swap_out(self, group: Group, blocks: int) -> bool:
        """Move `blocks` to the CPU pool if it has room; False (counted) when it does not."""
        if self.swap_used + blocks > self.swap_blocks:
            self.swap_fallbacks += 1
            return False
        self._swapped[group.gid] = blocks
        self.swap_used += blocks
        self.swap_peak = max(self.swap_peak, self.swap_used)
        self.swap_outs += 1
        return True

    def _drop(self, record: _Resident, blocks: int) -> None:
        """Give back the record's `blocks` (and its prefill tokens, internal slots)."""
        del self._resident[record.group.gid]
        if record.prefilled >= 0:
            self.prefill_tokens -= record.prefilled
        self.held_blocks -= blocks
        self.internal_slots -= record.internal
        self.releases += 1

    def check(self, tick: int) -> None:
        """Recount every resident's blocks from its length and compare with the counters."""
        size, held, internal, crossing = self.block_size, 0, 0, [0] * self.block_size
        for record in self._resident.values():
            group = record.group
            if record.prefilled >= 0:
                held += -(-record.prefilled // size)
                continue
            length = tick + record.base
            held += -(-length // size)
            final_blocks = -(-group.final_len // size)
            if -(-length // size) == final_blocks:
                internal += final_blocks * size - group.final_len
            elif record.last_cross > tick:
                crossing[record.last_cross % size] += 1
        if held != self.held_blocks or internal != self.internal_slots or crossing != self._crossing:
            raise InvariantViolation(
                f"{self.name}: counted {self.held_blocks} blocks / {self.internal_slots} internal slots / "
                f"crossings {self._crossing}, recounted {held} / {internal} / {crossing} at tick {tick}"
            )
