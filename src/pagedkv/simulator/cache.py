"""What the step loop needs from a KV cache, and the base of the caches that reserve up front.

Every cache reports, at the end of every step, four numbers the loop turns into the paper's waste
breakdown of total capacity (Figure 2):

- `held_slots`: token slots nobody else can use (rows, buddy chunks, blocks);
- `internal_slots`: held slots the policy set aside beyond the request's final length
  (prompt + output), that will never hold a token;
- `padding_slots`: held slots lost to allocator rounding (Orca's buddy chunks), counted with
  external fragmentation because the request never asked for them;
- `saved_slots`: slots the sequences would hold on their own but share (paged `fork` and prefix
  cache hits; the shared blocks are full, so each saves `block_size` slots).

The loop knows every sequence's length, so with these: token states = lengths - saved;
reservation = held - padding - tokens - internal; external & other = capacity - held + padding.

Invariant kept by `ReservationCache`: the counters equal the sums over the admitted requests of
what each one reserved, so they are updated only at admission and release (events), never per token.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, TypeVar

from pagedkv.simulator.config import SimConfig, SimulationConfigError
from pagedkv.simulator.group import Group
from pagedkv.simulator.workload import Request

Chunk = TypeVar("Chunk")


class KVCache(ABC):
    """A KV cache policy under the step loop: admit, grow, preempt, release.

    A cache instance runs one simulation (`start` refuses a second): build a fresh one per run.
    """

    name: str
    capacity_slots: int
    held_slots: int
    internal_slots: int
    padding_slots: int
    saved_slots: int
    releases: int
    """Times memory was given back (finish or preemption): admission retries only when it changes."""

    def __init__(self, name: str, capacity_slots: int) -> None:
        self.name = name
        self.capacity_slots = capacity_slots
        self.releases = 0
        self._config: SimConfig | None = None

    def start(self, config: SimConfig, requests: list[Request]) -> None:
        """Bind the run's settings; raise `SimulationConfigError` if some request can never fit."""
        if self._config is not None:
            raise SimulationConfigError(f"cache {self.name!r} has already run a simulation; build a new one")
        self._config = config
        for request in requests:
            self.check_fits(request, config.num_seqs)

    @abstractmethod
    def check_fits(self, request: Request, num_seqs: int) -> None:
        """Raise `SimulationConfigError` if `request` could not run even in an empty cache."""

    @abstractmethod
    def admit(self, group: Group, step: int) -> int | None:
        """Give the group memory for `group.resume_len + 1` tokens a sequence (its prompt, or what it
        had when preempted, plus this step's token); returns the tokens computed to get there
        (prefill), or None, changing nothing, when it does not fit now."""

    @abstractmethod
    def release(self, group: Group) -> None:
        """Free a finished group's memory and bump its epoch."""

    def grow(self, step: int) -> list[Group]:
        """Handle this step's growth events; return the groups preempted to make room (newest first)."""
        return []

    def counters(self) -> dict[str, int | float]:
        """Cache-specific totals for the summary (preemptions, swaps, prefix hits...)."""
        return {}

    @abstractmethod
    def describe(self) -> str:
        """How the capacity is laid out, e.g. ``32 rows x 4,500 slots``."""

    def check(self, step: int) -> None:  # noqa: B027 - optional hook, nothing to verify by default
        """Verify bookkeeping at the end of `step` (`SimConfig.check_invariants`)."""


class ReservationCache(KVCache, Generic[Chunk]):
    """A cache that reserves each sequence's memory at admission and never grows or preempts.

    Subclasses say how much one sequence reserves (`claimed_slots`, what the policy asks for, and
    `chunk_slots`, what placement actually takes) and how chunks are taken and given back.
    """

    def __init__(self, name: str, capacity_slots: int) -> None:
        super().__init__(name, capacity_slots)
        self.held_slots = self.internal_slots = self.padding_slots = self.saved_slots = 0
        self._chunks: dict[int, list[Chunk]] = {}

    @abstractmethod
    def claimed_slots(self, request: Request) -> int:
        """Slots the policy reserves for one sequence of `request` (>= its final length)."""

    @abstractmethod
    def chunk_slots(self, request: Request) -> int:
        """Slots one sequence's chunk occupies once placed (>= `claimed_slots`)."""

    @abstractmethod
    def _take(self, request: Request) -> Chunk | None:
        """Place one sequence's chunk, or None when there is no room."""

    @abstractmethod
    def _give_back(self, chunk: Chunk) -> None: ...

    def admit(self, group: Group, step: int) -> int | None:
        chunks: list[Chunk] = []
        for _ in range(group.num_seqs):
            chunk = self._take(group.request)
            if chunk is None:
                for taken in chunks:
                    self._give_back(taken)
                return None
            chunks.append(chunk)
        self._chunks[group.gid] = chunks
        self._account(group, +1)
        return group.resume_len

    def placement(self, request_id: int) -> list[Chunk]:
        """Where the running request's sequences sit (one chunk each; a copy): for viewers."""
        return list(self._chunks[request_id])

    def release(self, group: Group) -> None:
        for chunk in self._chunks.pop(group.gid):
            self._give_back(chunk)
        self._account(group, -1)
        self.releases += 1
        group.epoch += 1

    def _account(self, group: Group, sign: int) -> None:
        request, n = group.request, group.num_seqs * sign
        claimed, held = self.claimed_slots(request), self.chunk_slots(request)
        self.held_slots += n * held
        self.padding_slots += n * (held - claimed)
        self.internal_slots += n * (claimed - request.total_len)
