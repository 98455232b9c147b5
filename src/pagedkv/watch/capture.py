"""Everything `pagedkv watch` reads from a cache, in one place: snapshots of the KV pool at chosen steps.

The simulator's caches own their state and may change inside; the viewer depends only on the small
read-only surface listed here, so adapting it to a change in a cache means editing this file alone.

Read, never changed:
- every cache (`KVCache`): `name`, `capacity_slots`, `counters()` (preemptions, copy-on-write and
  prefix-hit totals so far);
- `NaiveCache` and `OrcaCache` (`ReservationCache`): `placement(request_id)` (the row, or the first
  buddy unit, of each sequence), `chunk_slots(request)` and `claimed_slots(request)`, and the unit of
  their layout (`max_seq_len`, a naive row; `block_size`, an Orca buddy unit);
- `PagedCache`: `block_size`, `sequences(request_id)` and its `BlockManager` `bm`:
  `block_table(seq)`, `enable_prefix_caching`, `free_block_ids()` and, with prefix caching, the
  prefix cache's cached free blocks (`cached_free_block_ids`);
- what the manager's `allocate`, `append` and `append_batch` return (prefix-cache hits, the
  copy-on-write pairs), observed by wrapping those three methods on the one `BlockManager` instance
  (`_Taps`): arguments and results pass through unchanged, the wrapper only notes the results;
- the loop's `StepView`: `step`, `tick`, `running` (decoding groups: `request`, `length(tick)`,
  `final_len`, `prompt_len`) and `prefilling` (groups whose prompt is still being written: `computed`);

Invariant: a snapshot is taken by the loop's `on_step` observer at the end of a step, after its tokens
are written and its metrics recorded, so a snapshot and the simulator's metrics of the same step
describe the same moment.

Encoding. A sequence that stays in one place is one `Placement` (its row or buddy chunk; for the paged
cache its block table, which only grows while it stays); a snapshot lists, per running sequence, the
placement, its length and (paged) how many of the placement's blocks it holds. A table that changes
other than by growing (copy-on-write of its last block, preemption, a beam re-forked) starts a new
placement. So the data grows with the blocks handed out, not with blocks x frames.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pagedkv.simulator.cache import KVCache
from pagedkv.simulator.group import Group
from pagedkv.simulator.loop import StepView
from pagedkv.simulator.naive import NaiveCache
from pagedkv.simulator.orca import OrcaCache
from pagedkv.simulator.paged import PagedCache
from pagedkv.watch.palette import colour_index

ROWS, BUDDY, BLOCKS = "rows", "buddy", "blocks"
"""Layout kinds: naive rows of `max_seq_len` slots; Orca chunks of buddy units; paged blocks."""


@dataclass(slots=True)
class Placement:
    """One sequence's stay in one place: what stays fixed while it runs there."""

    request: int
    sample: int
    prompt_len: int
    final_len: int
    start: int = 0
    """rows: the row; buddy: the first unit of its chunk; blocks: unused (0)."""
    units: int = 0
    """rows: 1; buddy: units in its chunk; blocks: unused (0)."""
    claimed: int = 0
    """rows, buddy: slots the policy reserved for it (>= final_len); blocks: unused (0)."""
    blocks: list[int] = field(default_factory=list)
    """blocks: its block table (the longest seen while it stayed); a snapshot says how many it holds."""
    reused: int = 0
    """blocks: leading blocks of its table that the prefix cache served at its allocation."""

    @property
    def colour(self) -> int:
        return colour_index(self.request, self.sample)


@dataclass(slots=True)
class Snapshot:
    """The pool at the end of one step."""

    step: int
    seqs: list[int]
    """Flat: placement index, length (tokens), blocks held (blocks layout; 0 otherwise), per sequence."""
    preemptions: int
    """Preemptions so far (recompute + swap-out)."""
    cow_copies: int = 0
    """blocks: copy-on-write copies so far."""
    prefix_hit_tokens: int = 0
    """blocks: prompt tokens served from the prefix cache so far."""
    cached: list[int] = field(default_factory=list)
    """blocks, prefix caching: free blocks whose contents a new prompt could still reuse (ascending)."""
    copies: list[tuple[int, int, int]] = field(default_factory=list)
    """blocks: (step, source, destination) of every copy-on-write since the previous snapshot."""


@dataclass(slots=True)
class Track:
    """What one cache did at the snapshot steps."""

    name: str
    kind: str
    capacity_slots: int
    unit_slots: int
    """Slots in one row (rows) or one unit/block (buddy, blocks)."""
    num_units: int
    """Rows, buddy units or blocks in the pool."""
    placements: list[Placement]
    snapshots: list[Snapshot]
    prefix_caching: bool = False
    """blocks: whether the manager caches prompt prefixes (so free blocks may still be cached)."""


def layout_kind(cache: KVCache) -> str:
    if isinstance(cache, PagedCache):
        return BLOCKS
    if isinstance(cache, OrcaCache):
        return BUDDY
    if isinstance(cache, NaiveCache):
        return ROWS
    raise TypeError(f"pagedkv watch cannot draw a {type(cache).__name__}; it knows naive, Orca and paged")


class Recorder:
    """The `on_step` observer of one cache's run: a `Snapshot` at each step of `steps`.

    Build it before the run starts (it wraps the paged cache's manager methods then, so the
    copy-on-writes and prefix hits of the first step are seen too).
    """

    def __init__(self, cache: KVCache, steps: Collection[int]) -> None:
        self.cache = cache
        self.kind = layout_kind(cache)
        self._wanted = frozenset(steps)
        self._placements: list[Placement] = []
        self._snapshots: list[Snapshot] = []
        self._open: dict[Hashable, int] = {}  # sequence key -> placement, for those in the last snapshot
        self._copies: list[tuple[int, int, int]] = []
        self._taps = _Taps(cache.bm) if isinstance(cache, PagedCache) else None

    def __call__(self, view: StepView) -> None:
        taps = self._taps
        if taps is not None and taps.pending:
            self._copies.extend((view.step, src, dst) for src, dst in taps.pending)
            taps.pending.clear()
        if view.step in self._wanted:
            self._snapshots.append(self._snapshot(view))

    def track(self) -> Track:
        cache = self.cache
        if self.kind == ROWS:
            assert isinstance(cache, NaiveCache)
            unit = cache.max_seq_len
        else:
            assert isinstance(cache, (OrcaCache, PagedCache))
            unit = cache.block_size
        return Track(
            name=cache.name,
            kind=self.kind,
            capacity_slots=cache.capacity_slots,
            unit_slots=unit,
            num_units=cache.capacity_slots // unit,
            placements=self._placements,
            snapshots=self._snapshots,
            prefix_caching=isinstance(cache, PagedCache) and cache.bm.enable_prefix_caching,
        )

    # ------------------------------------------------------------------ one snapshot

    def _snapshot(self, view: StepView) -> Snapshot:
        counters = self.cache.counters()
        snapshot = Snapshot(
            step=view.step,
            seqs=[],
            preemptions=int(counters.get("preemptions_recompute", 0)) + int(counters.get("swap_outs", 0)),
        )
        opened: dict[Hashable, int] = {}
        if self.kind == BLOCKS:
            self._snapshot_blocks(view, snapshot, opened)
            snapshot.cow_copies = int(counters.get("cow_copies", 0))
            snapshot.prefix_hit_tokens = int(counters.get("prompt_hit_tokens", 0))
            snapshot.copies, self._copies = self._copies, []
        else:
            self._snapshot_chunks(view, snapshot, opened)
        self._open = opened
        return snapshot

    def _snapshot_chunks(self, view: StepView, snapshot: Snapshot, opened: dict[Hashable, int]) -> None:
        cache = self.cache
        assert isinstance(cache, (NaiveCache, OrcaCache))
        unit = cache.max_seq_len if isinstance(cache, NaiveCache) else cache.block_size
        for gid, group, length in _resident(view):
            request = group.request
            for sample, chunk in enumerate(cache.placement(gid)):
                key = (gid, sample, chunk)
                index = self._open.get(key)
                if index is None:
                    index = self._add(
                        Placement(
                            request=gid,
                            sample=sample,
                            prompt_len=group.prompt_len,
                            final_len=group.final_len,
                            start=chunk,
                            units=cache.chunk_slots(request) // unit,
                            claimed=cache.claimed_slots(request),
                        )
                    )
                opened[key] = index
                snapshot.seqs += (index, length, 0)

    def _snapshot_blocks(self, view: StepView, snapshot: Snapshot, opened: dict[Hashable, int]) -> None:
        cache = self.cache
        assert isinstance(cache, PagedCache) and self._taps is not None
        bm, size = cache.bm, cache.block_size
        for gid, group, length in _resident(view):
            for sample, seq in enumerate(cache.sequences(gid)):
                table = bm.block_table(seq)
                index = self._open.get(seq)
                if index is None or not _grows(self._placements[index].blocks, table):
                    index = self._add(
                        Placement(
                            request=gid,
                            sample=sample,
                            prompt_len=group.prompt_len,
                            final_len=group.final_len,
                            blocks=table,
                            reused=self._taps.hits.get(seq, 0) // size,
                        )
                    )
                elif len(table) > len(self._placements[index].blocks):
                    self._placements[index].blocks = table
                opened[seq] = index
                snapshot.seqs += (index, length, len(table))
        if bm.enable_prefix_caching:
            snapshot.cached = sorted(bm.cached_free_block_ids())

    def _add(self, placement: Placement) -> int:
        self._placements.append(placement)
        return len(self._placements) - 1


def _resident(view: StepView) -> Iterator[tuple[int, Group, int]]:
    """(request id, group, tokens each of its sequences holds) of every group in memory: decoding
    ones (their length at this tick) and those still prefilling (the prompt tokens written so far)."""
    for gid, group in view.running.items():
        yield gid, group, group.length(view.tick)
    for gid, group in view.prefilling.items():
        yield gid, group, group.computed


def _grows(known: list[int], table: list[int]) -> bool:
    """Whether `table` is `known` extended (or a prefix of it): the same stay of the same sequence."""
    common = min(len(known), len(table))
    return known[:common] == table[:common]


class _Taps:
    """Notes what the manager hands back: copy-on-write pairs and prefix-cache hits (read-only wrappers).

    The simulator's paged cache drops both results (it only needs the counts), and a viewer must show
    *which* block was copied and *which* blocks came from the cache; the wrappers return every result
    unchanged.
    """

    def __init__(self, bm: Any) -> None:
        self.pending: list[tuple[int, int]] = []  # copy-on-write (src, dst) since the last step
        self.hits: dict[Hashable, int] = {}  # sequence -> prompt tokens served by the prefix cache
        bm.allocate = self._wrap(bm.allocate, self._on_allocate)
        bm.append = self._wrap(bm.append, self._on_copies)
        bm.append_batch = self._wrap(bm.append_batch, self._on_copies)

    @staticmethod
    def _wrap(method: Callable[..., Any], note: Callable[[Any, Any], None]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            note(args[0] if args else kwargs.get("seq_id", kwargs.get("seq_ids")), result)
            return result

        return wrapped

    def _on_allocate(self, seq: Any, hit_tokens: int) -> None:
        self.hits[seq] = hit_tokens

    def _on_copies(self, _seqs: Any, copies: list[tuple[int, int]]) -> None:
        self.pending.extend(copies)
