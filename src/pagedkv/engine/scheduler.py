"""Continuous-batching scheduler: which sequences run this step, with blocks from the `BlockManager`.

Each step (vLLM's policy, simplified):
1. every running sequence reserves the slot of its next token (`BlockManager.append`), oldest
   first; when the pool runs dry the newest running sequence is preempted by recompute: its blocks
   are freed and it goes back to the front of the waiting queue, to be prefilled again later with
   its prompt and everything it generated so far;
2. if nobody was preempted, waiting requests are admitted first-come first-served while
   `can_allocate` says their tokens fit (and the sequence/token budgets allow): the prompt is
   allocated once and forked `n - 1` times, so samples share the prompt's blocks.

Invariants this ordering keeps: a preemption victim is always a sequence not yet scheduled in the
step (or the one whose append just failed, which changes nothing), so no freed block holds a
pending copy-on-write or K/V that was promised but never written; every block registered in the
prefix cache is written by the end of the step that registered it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from pagedkv.block_manager import BlockManager
from pagedkv.engine.sequence import Request, Sequence
from pagedkv.errors import OutOfBlocks


@dataclass
class Prefill:
    """Compute `seq.tokens[start:]`; store K/V from `write_start` on; sample for `samplers`."""

    seq: Sequence
    start: int
    write_start: (
        int  # > start only when the whole prompt was cached: its last token is recomputed, not stored
    )
    samplers: list[Sequence]  # seq and its forks: all sample their first token from the same logits

    @property
    def cached_tokens(self) -> int:
        return self.start


@dataclass
class ScheduleOutput:
    prefills: list[Prefill] = field(default_factory=list)
    decodes: list[Sequence] = field(default_factory=list)
    copies: list[tuple[int, int]] = field(default_factory=list)  # copy-on-write (src, dst) to perform first
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.prefills and not self.decodes


class Scheduler:
    """Owns the waiting queue and the running list; all block bookkeeping goes through the manager."""

    def __init__(
        self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int | None = None
    ) -> None:
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Request | Sequence] = deque()  # new requests, and preempted sequences in front
        self.running: list[Sequence] = []  # in admission order: the last one is preempted first
        self.num_preemptions = 0

    def add(self, request: Request) -> None:
        self.waiting.append(request)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduleOutput:
        out = ScheduleOutput()
        self._reserve_decode_slots(out)
        out.decodes = list(self.running)
        if not out.preempted:
            self._admit(out)
        return out

    def finish(self, seq: Sequence) -> None:
        """Release a finished sequence's blocks (shared ones stay with their other owners)."""
        self.block_manager.free(seq.seq_id)
        self.running.remove(seq)

    def abort(self, request: Request) -> list[Sequence]:
        """Drop every queued entry of `request` and free the blocks of its running sequences at once;
        returns the sequences that were still unfinished."""
        seqs = set(request.seqs)
        self.waiting = deque(e for e in self.waiting if e is not request and e not in seqs)
        for seq in [s for s in self.running if s in seqs]:
            self.finish(seq)
        return [seq for seq in request.seqs if seq.finish_reason is None]

    def _reserve_decode_slots(self, out: ScheduleOutput) -> None:
        queue = deque(self.running)
        kept: list[Sequence] = []
        while queue:
            seq = queue.popleft()
            while True:
                try:
                    out.copies += self.block_manager.append(seq.seq_id, [seq.tokens[-1]])
                    kept.append(seq)
                    break
                except OutOfBlocks:
                    victim = queue.pop() if queue else seq
                    self._preempt(victim)
                    out.preempted.append(victim)
                    if victim is seq:
                        break
        self.running = kept

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free(seq.seq_id)
        seq.num_computed = 0
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def _admit(self, out: ScheduleOutput) -> None:
        num_tokens = len(out.decodes)
        while self.waiting:
            entry = self.waiting[0]
            tokens = entry.prompt_token_ids if isinstance(entry, Request) else entry.tokens
            new_seqs = len(entry.seqs) if isinstance(entry, Request) else 1
            if len(self.running) + new_seqs > self.max_num_seqs:
                break
            budget = self.max_num_batched_tokens
            if budget is not None and num_tokens and num_tokens + len(tokens) > budget:
                break
            if not self.block_manager.can_allocate(tokens):
                break
            self.waiting.popleft()
            prefill = self._start(entry, tokens)
            out.prefills.append(prefill)
            num_tokens += len(tokens) - prefill.start

    def _start(self, entry: Request | Sequence, tokens: list[int]) -> Prefill:
        seqs = entry.seqs if isinstance(entry, Request) else [entry]
        first = seqs[0]
        cached = self.block_manager.allocate(first.seq_id, tokens)
        for child in seqs[1:]:
            self.block_manager.fork(first.seq_id, child.seq_id)
        self.running += seqs
        # the last token is always computed: its logits pick the next token
        return Prefill(first, start=min(cached, len(tokens) - 1), write_start=cached, samplers=seqs)
