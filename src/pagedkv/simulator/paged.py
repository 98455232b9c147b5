"""The paged cache: PagedAttention's `BlockManager` under the step loop, with preemption and sharing.

Memory is taken a block at a time, when a sequence crosses a block boundary. The loop does not append
token by token: each group's next crossing is an event on a heap, and at that step every sequence of
the group catches the manager up with *one* ``append(seq, k)`` of the k tokens generated since its
last one. When no block is free, the newest running request is preempted (as vLLM does): by
recompute (its blocks are freed and it is queued again; its prompt and the output so far are
prefilled when it resumes) or by swap (its blocks move to a CPU pool of `swap_blocks`; it is swapped
back in before it resumes; when the CPU pool is full it is recomputed instead, counted).

Sharing is real: parallel samples are `fork`s of the prompt; beams are forked and pruned by the beam
model (`SimConfig.beam_prune_prob`); with prefix caching, prompts are allocated by token id (see
`token_ids`), so equal Mooncake prefixes hit the cache.

Invariants, at the end of every step:
- each running sequence has ``ceil(length / block_size)`` blocks (the manager's token count may lag
  behind the length; it is caught up at the next event, within the blocks already held);
- no partly filled block is shared: the copy-on-write of a fork happens in the step of the first
  write, so each shared block is full and saves exactly `block_size` slots;
- `logical_blocks` is the sum of ``num_seqs * ceil(length / block_size)`` over running groups and
  `internal_slots` the final-block padding of the groups already in their last block.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random

from pagedkv.block_manager import BlockManager
from pagedkv.errors import InvariantViolation, OutOfBlocks
from pagedkv.simulator.cache import KVCache
from pagedkv.simulator.config import SimConfig, SimulationConfigError
from pagedkv.simulator.group import Group
from pagedkv.simulator.token_ids import output_token_ids, prompt_token_ids
from pagedkv.simulator.workload import Request

PREEMPTION_MODES = ("recompute", "swap")
_BEAM, _BOUNDARY = 0, 1  # event kinds; at equal steps, beams fork before blocks are crossed


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
        if block_size < 1:
            raise SimulationConfigError(f"block_size={block_size} must be >= 1 token")
        if kv_slots < block_size:
            raise SimulationConfigError(
                f"kv_slots={kv_slots:,} is smaller than one block of block_size={block_size} slots"
            )
        if preemption not in PREEMPTION_MODES:
            raise SimulationConfigError(
                f"preemption={preemption!r} must be one of {', '.join(PREEMPTION_MODES)}"
            )
        if swap_slots is not None and swap_slots < 0:
            raise SimulationConfigError(f"swap_slots={swap_slots} must be >= 0 (0 disables swapping)")
        super().__init__(name, kv_slots)
        self.block_size = block_size
        self.num_blocks = kv_slots // block_size
        self.bm = BlockManager(self.num_blocks, block_size, enable_prefix_caching, watermark)
        self.preemption = preemption
        self.swap_blocks = self.num_blocks if swap_slots is None else swap_slots // block_size
        self.logical_blocks = 0
        self.internal_slots = 0
        self.padding_slots = 0
        self.swap_used = self.swap_peak = 0
        self.recomputes = self.swap_outs = self.swap_ins = self.swap_fallbacks = 0
        self.prompt_tokens = self.prompt_hit_tokens = 0
        self._prefix = enable_prefix_caching
        self._resident: dict[int, Group] = {}  # admission order: the newest is last
        self._seqs: dict[int, list[int]] = {}  # group -> its sequence ids (kept across preemptions)
        self._group_blocks: dict[int, int] = {}  # group -> its logical blocks
        self._group_internal: dict[int, int] = {}
        self._swapped_blocks: dict[int, int] = {}
        self._prompt_ids: dict[int, list[int]] = {}
        self._beams: dict[int, tuple[random.Random, list[int]]] = {}  # group -> (rng, prune step per beam)
        self._events: list[tuple[int, int, int, Group, int]] = []  # (step, kind, tiebreak, group, epoch)
        self._tiebreak = itertools.count()
        self._seq_ids = itertools.count()

    # ------------------------------------------------------------------ the loop's view

    @property
    def held_slots(self) -> int:
        return (self.num_blocks - self.bm.num_free_blocks) * self.block_size

    @property
    def saved_slots(self) -> int:
        return (self.logical_blocks - self.num_blocks + self.bm.num_free_blocks) * self.block_size

    def sequences(self, request_id: int) -> list[int]:
        """The `BlockManager` sequence ids of a running request's sequences (a copy): for viewers."""
        return list(self._seqs[request_id])

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
        unused = self.capacity_slots - self.num_blocks * self.block_size
        tail = f" ({unused:,} slots left over)" if unused else ""
        return f"{self.num_blocks:,} blocks x {self.block_size} slots{tail}"

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

    # ------------------------------------------------------------------ admission and release

    def start(self, config: SimConfig, requests: list[Request]) -> None:
        super().start(config, requests)
        self._beam_prob = config.beam_prune_prob if config.beam_search else 0.0
        self._seed = config.seed

    def admit(self, group: Group, step: int) -> int | None:
        seqs = self._seqs.get(group.gid)
        if seqs is None:
            seqs = self._seqs[group.gid] = [next(self._seq_ids) for _ in range(group.num_seqs)]
        length = group.resume_len + 1  # what each sequence holds once this step's token is written
        hits = self._materialize(group, seqs, length)
        if hits is None:
            return None
        if group.swapped:
            self.swap_used -= self._swapped_blocks.pop(group.gid)
            self.swap_ins += 1
            group.swapped = False
            computed = 0
        else:
            computed = max(group.resume_len - hits, 0)
        if group.first_admit_step < 0 and self._prefix:
            self.prompt_tokens += group.prompt_len
            self.prompt_hit_tokens += min(hits, group.prompt_len)
        self._resident[group.gid] = group
        blocks = -(-length // self.block_size)
        self._group_blocks[group.gid] = group.num_seqs * blocks
        self.logical_blocks += group.num_seqs * blocks
        self._group_internal[group.gid] = 0
        self._enter_block(group, blocks)
        self._schedule_boundary(group, step, length)
        if self._beam_prob > 0:
            self._start_beams(group, step)
        return computed

    def _materialize(self, group: Group, seqs: list[int], length: int) -> int | None:
        """Allocate the group's sequences at `length` tokens; prompt-cache hits, or None if no room."""
        bm, prompt = self.bm, group.prompt_len
        if len(seqs) == 1:
            tokens = self._ids(group, seqs[0], 0, length) if self._prefix else length
            if not bm.can_allocate(tokens):
                return None
            return bm.allocate(seqs[0], tokens)
        if not bm.can_allocate(self.blocks_for(prompt, length, len(seqs)) * self.block_size):
            return None
        hits = bm.allocate(seqs[0], self._ids(group, seqs[0], 0, prompt) if self._prefix else prompt)
        for seq in seqs[1:]:
            bm.fork(seqs[0], seq)
        for seq in seqs:
            bm.append(seq, self._ids(group, seq, prompt, length) if self._prefix else length - prompt)
        return hits

    def release(self, group: Group) -> None:
        self._drop(group)
        self._prompt_ids.pop(group.gid, None)
        self._beams.pop(group.gid, None)
        del self._seqs[group.gid]

    def _drop(self, group: Group) -> None:
        for seq in self._seqs[group.gid]:
            self.bm.free(seq)
        del self._resident[group.gid]
        self.logical_blocks -= self._group_blocks.pop(group.gid)
        self.internal_slots -= self._group_internal.pop(group.gid)
        self.releases += 1
        group.epoch += 1

    # ------------------------------------------------------------------ growth events

    def grow(self, step: int) -> list[Group]:
        preempted: list[Group] = []
        events = self._events
        while events and events[0][0] <= step:
            _, kind, _, group, epoch = heapq.heappop(events)
            if epoch != group.epoch:
                continue  # the group finished or was preempted since this was queued
            if kind == _BOUNDARY:
                self._cross_boundary(group, step, preempted)
            else:
                self._prune_beams(group, step, preempted)
        return preempted

    def _schedule_boundary(self, group: Group, step: int, length: int) -> None:
        """Queue the step at which the group's sequences first need one more block."""
        crossing = -(-length // self.block_size) * self.block_size + 1
        if crossing <= group.final_len:
            self._push(step + crossing - length, _BOUNDARY, group)

    def _cross_boundary(self, group: Group, step: int, preempted: list[Group]) -> None:
        length = group.length(step)
        for seq in self._seqs[group.gid]:
            if not self._catch_up(group, seq, length, step, preempted):
                return  # the group itself was preempted
        self._group_blocks[group.gid] += group.num_seqs
        self.logical_blocks += group.num_seqs
        self._enter_block(group, -(-length // self.block_size))
        if length + self.block_size <= group.final_len:
            self._push(step + self.block_size, _BOUNDARY, group)

    def _enter_block(self, group: Group, blocks: int) -> None:
        """Count the final block's never-used slots as internal fragmentation once it is reached."""
        final_blocks = -(-group.final_len // self.block_size)
        if blocks == final_blocks:
            padding = group.num_seqs * (final_blocks * self.block_size - group.final_len)
            self._group_internal[group.gid] = padding
            self.internal_slots += padding

    def _catch_up(self, group: Group, seq: int, length: int, step: int, preempted: list[Group]) -> bool:
        """Append what `seq` generated since its last append, preempting the newest groups while no
        block is free; False when `group` itself had to be preempted."""
        have = self.bm.num_tokens(seq)
        if have >= length:
            return True
        tokens = self._ids(group, seq, have, length) if self._prefix else length - have
        while True:
            try:
                self.bm.append(seq, tokens)
                return True
            except OutOfBlocks:
                victim = next(reversed(self._resident.values()))
                self._preempt(victim, step, preempted)
                if victim is group:
                    return False

    def _preempt(self, group: Group, step: int, preempted: list[Group]) -> None:
        """Take the group off the GPU before it generates this step's token (swap, else recompute)."""
        seqs = self._seqs[group.gid]
        held = group.length(step - 1)
        swap = False
        if self.preemption == "swap":
            blocks = len({block for seq in seqs for block in self.bm.block_table(seq)})
            swap = self.swap_used + blocks <= self.swap_blocks
            if swap:
                self._swapped_blocks[group.gid] = blocks
                self.swap_used += blocks
                self.swap_peak = max(self.swap_peak, self.swap_used)
                self.swap_outs += 1
            else:
                self.swap_fallbacks += 1
        if not swap:
            self.recomputes += 1
            if self._prefix:  # record the contents so the recompute can hit its own freed blocks
                for seq in seqs:
                    have = self.bm.num_tokens(seq)
                    if have < held:
                        self.bm.append(seq, self._ids(group, seq, have, held))
        group.swapped = swap
        self._drop(group)
        preempted.append(group)

    # ------------------------------------------------------------------ beam search

    def _start_beams(self, group: Group, step: int) -> None:
        rng = (
            self._beams[group.gid][0]
            if group.gid in self._beams
            else random.Random(self._seed * 1_000_003 + group.gid)
        )
        prune_steps = [step + self._steps_to_prune(rng) for _ in range(group.num_seqs)]
        self._beams[group.gid] = (rng, prune_steps)
        self._schedule_beams(group, prune_steps)

    def _steps_to_prune(self, rng: random.Random) -> int:
        """Decode steps until a beam is pruned: geometric, one Bernoulli(p) trial a step."""
        p = self._beam_prob
        if p >= 1.0:
            return 1
        return int(math.log(1.0 - rng.random()) / math.log(1.0 - p)) + 1

    def _schedule_beams(self, group: Group, prune_steps: list[int]) -> None:
        first = min(prune_steps)
        if first <= group.finish_step:
            self._push(first, _BEAM, group)

    def _prune_beams(self, group: Group, step: int, preempted: list[Group]) -> None:
        """Replace each beam pruned at `step` by a fork of another beam as it stood before the step.

        All forks are taken before any pruned beam is freed and before any token of this step is
        written, so a beam forked twice in one step yields identical copies, as it should.
        """
        rng, prune_steps = self._beams[group.gid]
        seqs = self._seqs[group.gid]
        before = group.length(step - 1)
        old = list(seqs)
        pruned = [i for i, at in enumerate(prune_steps) if at == step]
        writers = set()
        for i in pruned:
            j = rng.randrange(len(old) - 1)
            parent = old[j + (j >= i)]
            have = self.bm.num_tokens(parent)
            if have < before:  # within its blocks: never allocates
                self.bm.append(
                    parent, self._ids(group, parent, have, before) if self._prefix else before - have
                )
            seqs[i] = next(self._seq_ids)
            self.bm.fork(parent, seqs[i])
            writers.update((parent, seqs[i]))
            prune_steps[i] = step + self._steps_to_prune(rng)
        for i in pruned:
            self.bm.free(old[i])
        if before % self.block_size:  # this step's token goes into a shared, partly filled block
            for seq in seqs:
                if seq in writers and not self._catch_up(group, seq, before + 1, step, preempted):
                    return
        self._schedule_beams(group, prune_steps)

    # ------------------------------------------------------------------ helpers

    def _push(self, step: int, kind: int, group: Group) -> None:
        heapq.heappush(self._events, (step, kind, next(self._tiebreak), group, group.epoch))

    def _ids(self, group: Group, seq: int, start: int, stop: int) -> list[int]:
        """Token ids of positions ``start .. stop - 1`` of `seq` (prefix caching only)."""
        prompt = self._prompt_ids.get(group.gid)
        if prompt is None:
            prompt = self._prompt_ids[group.gid] = prompt_token_ids(group.request)
        ids = prompt[start : min(stop, len(prompt))]
        if stop > len(prompt):
            ids.extend(output_token_ids(seq, max(start, len(prompt)), stop))
        return ids

    def check(self, step: int) -> None:
        """Check the module invariants against the block manager (slow: every block of every sequence)."""
        self.bm.check_invariants()
        size, logical, held = self.block_size, 0, set()
        for group in self._resident.values():
            length = group.length(step)
            for seq in self._seqs[group.gid]:
                table = self.bm.block_table(seq)
                if len(table) != -(-length // size) or self.bm.num_tokens(seq) > length:
                    raise InvariantViolation(
                        f"{self.name}: sequence {seq} of request {group.gid} has {len(table)} blocks and "
                        f"{self.bm.num_tokens(seq)} tokens in the manager at length {length} (step {step})"
                    )
                if length % size and self.bm.ref_count(table[-1]) > 1:
                    raise InvariantViolation(f"{self.name}: a partly filled block {table[-1]} is shared")
                logical += len(table)
                held.update(table)
        if logical != self.logical_blocks or len(held) != self.num_blocks - self.bm.num_free_blocks:
            raise InvariantViolation(
                f"{self.name}: logical blocks {self.logical_blocks} (actual {logical}), held blocks "
                f"{self.num_blocks - self.bm.num_free_blocks} (referenced {len(held)}) at step {step}"
            )
