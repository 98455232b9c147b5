"""What the step loop asks of a KV cache, and the base of the caches that reserve up front.

The contract. The loop owns every request's lifecycle (`Group`: queues, lengths, timings, epochs);
a cache owns memory and answers five questions, writing nothing of a group's:

- `admit(group, tick, budget)`: make the group resident (its prompt, or a first chunk of it under a
  token budget), or say it does not fit now (None, nothing changed);
- `extend(group, tick, budget)`: the next chunk of a prompt that did not fit in one step;
- `grow(tick)`: this decode tick's growth (blocks for sequences crossing a block boundary), returning
  the groups it had to preempt to find room (`Preemption`);
- `release(group)`: a finished group's memory goes back;
- `usage()`: four numbers the loop turns into the paper's waste breakdown of capacity (Figure 2):

  - `held`: token slots nobody else can use (rows, buddy chunks, blocks);
  - `internal`: held slots the policy set aside beyond the request's final length (prompt + output),
    that will never hold a token;
  - `padding`: held slots lost to allocator rounding (Orca's buddy chunks), counted with external
    fragmentation because the request never asked for them;
  - `saved`: slots the sequences would hold on their own but share (paged `fork` and prefix cache
    hits; the shared blocks are full, so each saves `block_size` slots).

  The loop knows every sequence's length, so with these: token states = lengths - saved;
  reservation = held - padding - tokens - internal; external = capacity - held + padding.

Invariant kept by `ReservationCache`: its counters equal the sums over the admitted requests of what
each one reserved, so they change only at admission and release (events), never per token.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, NamedTuple, TypeVar

from pagedkv.simulator.config import SimConfig, SimulationConfigError
from pagedkv.simulator.group import Group
from pagedkv.simulator.workload import Request

Chunk = TypeVar("Chunk")


class Usage(NamedTuple):
    """A cache's memory at the end of a step, in token slots (see the module docstring).

    `prefill`: tokens held by groups whose prefill is not complete (summed over their sequences);
    the loop counts the lengths of decoding groups itself.
    """

    held: int
    internal: int
    padding: int
    saved: int
    prefill: int


class Admission(NamedTuple):
    """A prefill step of one group: prompt tokens found in the prefix cache, tokens computed in this
    step (what the token budget and the time model count), and whether the prefill is complete (then
    every sequence also holds this step's new token and decodes from the next step on)."""

    hits: int
    computed: int
    done: bool


class Preemption(NamedTuple):
    """A group taken off the GPU to make room; `swapped`: its KV moved to the CPU pool (else recompute)."""

    group: Group
    swapped: bool


class KVCache(ABC):
    """A KV cache policy under the step loop (see the module docstring for the contract).

    A cache instance runs one simulation (`start` refuses a second): build a fresh one per run.
    """

    name: str
    capacity_slots: int
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
    def admit(self, group: Group, tick: int, budget: int | None) -> Admission | None:
        """Make `group` resident, computing at most `budget` tokens now (None: no limit).

        A group whose whole remainder fits (``resume_len - hits <= budget``) completes its prefill in
        this step: each of its sequences then holds ``resume_len + 1`` tokens (this step's new token
        included). Otherwise only a chunk of ``hits + budget`` prompt tokens is written, shared by its
        sequences until the prefill completes in a later `extend`. A swapped-out group comes back
        whole with nothing to compute. None, changing nothing, when it does not fit now.
        """

    @abstractmethod
    def extend(self, group: Group, tick: int, budget: int) -> tuple[Admission, list[Preemption]]:
        """Compute the next chunk (at most `budget` tokens) of a resident group's prefill.

        Returns what was computed and the groups preempted to find room for it (the group itself may
        be one of them, and then nothing was computed). Completing the prefill writes this step's new
        token too, as in `admit`.
        """

    @abstractmethod
    def release(self, group: Group) -> None:
        """Free a finished group's memory."""

    @abstractmethod
    def usage(self) -> Usage:
        """Held, internal, padding and saved slots now (see the module docstring)."""

    def grow(self, tick: int) -> list[Preemption]:
        """Handle this decode tick's growth; return the groups preempted to make room (newest first)."""
        return []

    def counters(self) -> dict[str, int | float]:
        """Cache-specific totals for the summary (preemptions, swaps, prefix hits...)."""
        return {}

    @abstractmethod
    def describe(self) -> str:
        """How the capacity is laid out, e.g. ``32 rows x 4,500 slots``."""

    def check(self, tick: int) -> None:  # noqa: B027 - optional hook, nothing to verify by default
        """Verify bookkeeping at the end of a step (`SimConfig.check_invariants`)."""


class ReservationCache(KVCache, Generic[Chunk]):
    """A cache that reserves each sequence's memory at admission and never grows or preempts.

    Subclasses say how much one sequence reserves (`claimed_slots`, what the policy asks for, and
    `chunk_slots`, what placement actually takes) and how chunks are taken and given back. A chunked
    prefill computes its prompt over several steps inside the memory reserved at admission.
    """

    def __init__(self, name: str, capacity_slots: int) -> None:
        super().__init__(name, capacity_slots)
        self._held = self._internal = self._padding = 0
        self._chunks: dict[int, list[Chunk]] = {}
        self._prefilled: dict[int, int] = {}  # chunked prefills in progress: tokens computed so far
        self._prefill_tokens = 0  # their tokens, one copy per sequence (each has its own chunk)

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

    def placement(self, request_id: int) -> list[Chunk]:
        """Where the running request's sequences sit (one chunk each; a copy): for viewers."""
        return list(self._chunks[request_id])

    def admit(self, group: Group, tick: int, budget: int | None) -> Admission | None:
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
        if budget is None or group.resume_len <= budget:  # never preempted: the prompt is all there is
            return Admission(0, group.resume_len, True)
        self._prefilled[group.gid] = budget
        self._prefill_tokens += budget * group.num_seqs
        return Admission(0, budget, False)

    def extend(self, group: Group, tick: int, budget: int) -> tuple[Admission, list[Preemption]]:
        have = self._prefilled[group.gid]
        if group.resume_len - have <= budget:
            del self._prefilled[group.gid]
            self._prefill_tokens -= have * group.num_seqs
            return Admission(0, group.resume_len - have, True), []
        self._prefilled[group.gid] = have + budget
        self._prefill_tokens += budget * group.num_seqs
        return Admission(0, budget, False), []

    def release(self, group: Group) -> None:
        for chunk in self._chunks.pop(group.gid):
            self._give_back(chunk)
        self._account(group, -1)
        self.releases += 1

    def usage(self) -> Usage:
        return Usage(self._held, self._internal, self._padding, 0, self._prefill_tokens)

    def _account(self, group: Group, sign: int) -> None:
        request, n = group.request, group.num_seqs * sign
        claimed, held = self.claimed_slots(request), self.chunk_slots(request)
        self._held += n * held
        self._padding += n * (held - claimed)
        self._internal += n * (claimed - request.total_len)
