"""The step loop: one engine iteration a step, driven by events rather than by tokens.

Public API (re-exported by `pagedkv.simulator`; what `pagedkv simulate` and `pagedkv paper` call)::

    from pagedkv.simulator import (
        SimConfig, IterationTime, NaiveCache, OrcaCache, PagedCache,
        simulate, compare, standard_caches, synthetic_workload, load_trace,
    )
    requests = synthetic_workload(1000, rate=10.0, seed=0)           # or load_trace(path).requests
    caches = standard_caches(kv_slots=144_000, max_seq_len=4500)      # naive, orca-max/pow2/oracle, paged
    results = compare(requests, caches, SimConfig(iteration_time=IterationTime(0.05)))
    results["paged"].summary(window=(300, 900))                       # means over a steady state
    results["naive"].series.breakdown(capacity)                       # per-step waste breakdown

- ``simulate(requests, cache, config)`` runs one fresh cache and returns a `SimResult` (per-step
  `StepSeries`, per-request steps and latencies, counters); ``compare`` runs several caches, which
  must have the same `capacity_slots`, on the identical request list.
- Caches: ``NaiveCache(kv_slots, max_seq_len)``, ``OrcaCache(kv_slots, max_seq_len, "max" | "pow2" |
  "oracle", block_size=16)``, ``PagedCache(kv_slots, block_size, enable_prefix_caching=,
  watermark=, preemption="recompute" | "swap", swap_slots=)``. Sweeping block sizes = one
  `PagedCache` per size with the same `kv_slots` (and distinct `name`s).
- `SimConfig`: the iteration-time model, parallel sampling ``n`` or beam search ``beam_width``
  (with ``beam_prune_prob``), ``max_num_seqs``, ``max_time`` / ``max_steps`` to stop early, ``seed``.

One step, in order (vLLM's scheduler order, so an admission is never undone in its own step):
  1. requests that have arrived by the step's start time join the waiting queue;
  2. running sequences that cross a block boundary in this step get their block (paged); when none
     is free the newest running request is preempted;
  3. if nothing was preempted: swapped-out requests resume, then waiting requests are admitted,
     FCFS, each with its prompt prefilled and its first token generated in this step; admission
     stops at the first request that does not fit (head-of-line, no skipping);
  4. every running sequence has generated one token: the step's metrics are recorded;
  5. requests whose last token was this step's free their memory.

Cost. A group's length is ``step + base``, so step 4 is arithmetic; the only per-request work is at
events: arrivals, admissions, finishes (a heap keyed by finish step), and in the paged cache block
crossings (a heap keyed by crossing step, one ``append(seq, k)`` per crossing) and beam forks.
A step costs O(1) plus its events; no loop anywhere runs once per generated token, and the step
count itself shrinks as batches grow. Admission is retried only after memory was released, since
nothing else can make the head of the queue fit.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pagedkv.progress import Progress
from pagedkv.simulator.cache import KVCache
from pagedkv.simulator.config import SimConfig, SimulationConfigError
from pagedkv.simulator.group import Group
from pagedkv.simulator.metrics import SimResult, StepSeries
from pagedkv.simulator.naive import NaiveCache
from pagedkv.simulator.orca import OrcaCache
from pagedkv.simulator.paged import PagedCache
from pagedkv.simulator.workload import Request

CACHE_KINDS = ("naive", "orca-max", "orca-pow2", "orca-oracle", "paged")
_PROGRESS_EVERY = 2048  # steps


@dataclass(frozen=True, slots=True)
class StepView:
    """What an `on_step` observer sees at the end of a step (after its tokens are written and its
    metrics recorded, before the requests finishing in it free their memory). Read-only: the loop
    and the cache own everything here; an observer must not change it."""

    step: int
    time: float
    cache: KVCache
    running: Mapping[int, Group]  # request id -> group, in admission order
    waiting: Sequence[Group]
    swapped: Sequence[Group]


StepObserver = Callable[[StepView], None]


def standard_caches(
    kv_slots: int,
    max_seq_len: int,
    *,
    kinds: tuple[str, ...] | list[str] = CACHE_KINDS,
    block_size: int = 16,
    orca_block_size: int = 16,
    **paged_options: object,
) -> list[KVCache]:
    """Fresh caches of the given kinds, all with `kv_slots` token slots (equal memory)."""
    caches: list[KVCache] = []
    for kind in kinds:
        if kind == "naive":
            caches.append(NaiveCache(kv_slots, max_seq_len))
        elif kind.startswith("orca-") and kind in CACHE_KINDS:
            caches.append(OrcaCache(kv_slots, max_seq_len, kind[5:], block_size=orca_block_size))
        elif kind == "paged":
            caches.append(PagedCache(kv_slots, block_size, **paged_options))  # type: ignore[arg-type]
        else:
            raise SimulationConfigError(f"unknown cache {kind!r}; choose from {', '.join(CACHE_KINDS)}")
    return caches


def compare(
    requests: list[Request],
    caches: list[KVCache],
    config: SimConfig | None = None,
    *,
    progress: Progress | None = None,
    on_step: Callable[[str], StepObserver | None] | None = None,
) -> dict[str, SimResult]:
    """Run every cache on the identical request list; results by cache name, in the given order.

    `progress` advances by one for every request finished by any cache (its total is
    ``len(caches) * len(requests)``); `on_step(cache_name)` gives each run's observer (or None).
    """
    if not caches:
        raise SimulationConfigError("compare() needs at least one cache")
    capacities = {cache.capacity_slots for cache in caches}
    if len(capacities) != 1:
        listed = ", ".join(f"{c.name}={c.capacity_slots:,}" for c in caches)
        raise SimulationConfigError(f"caches in a comparison must have equal KV slots, got {listed}")
    names = [cache.name for cache in caches]
    if len(set(names)) != len(names):
        raise SimulationConfigError(
            f"cache names must be distinct, got {names}; pass name=... to tell them apart"
        )
    results = {}
    for cache in caches:
        if progress is not None:
            progress.set_description(f"simulating {cache.name}")
        observer = on_step(cache.name) if on_step is not None else None
        results[cache.name] = simulate(requests, cache, config, progress=progress, on_step=observer)
    return results


def simulate(
    requests: list[Request],
    cache: KVCache,
    config: SimConfig | None = None,
    *,
    progress: Progress | None = None,
    on_step: StepObserver | None = None,
) -> SimResult:
    """Serve `requests` (sorted by arrival) with a fresh `cache`; see the module docstring.

    `progress` advances by one for every finished request; `on_step` is called at the end of every
    step with a `StepView` (for recorders such as `pagedkv watch`; it slows the run down).
    """
    config = config or SimConfig()
    _check_requests(requests)
    started = time.perf_counter()
    cache.start(config, requests)
    groups = [Group(request, config.num_seqs) for request in requests]
    series, end_time = _run(groups, cache, config, progress, on_step)
    return SimResult(
        cache=cache.name,
        capacity_slots=cache.capacity_slots,
        layout=cache.describe(),
        config=config,
        series=series,
        arrival_step=[g.arrival_step for g in groups],
        first_admit_step=[g.first_admit_step for g in groups],
        finish_step=[-1 if math.isnan(g.finish_time) else g.finish_step for g in groups],
        latency_s=[g.finish_time - g.request.arrival_time for g in groups],
        preemptions=[g.preemptions for g in groups],
        counters=cache.counters(),
        end_time=end_time,
        wall_s=time.perf_counter() - started,
    )


def _run(
    groups: list[Group],
    cache: KVCache,
    config: SimConfig,
    progress: Progress | None,
    on_step: StepObserver | None,
) -> tuple[StepSeries, float]:
    series = StepSeries()
    waiting: deque[Group] = deque()
    swapped: deque[Group] = deque()
    running: dict[int, Group] = {}
    finishing: list[tuple[int, int, int, Group]] = []  # (finish step, request id, epoch, group)
    total, arrived, finished, reported = len(groups), 0, 0, 0
    step, clock = 0, 0.0
    num_seqs = base_sum = 0  # running sequences; sum of their `base`, so sum of lengths = n*step + base_sum
    blocked: tuple[Group | None, int] = (None, -1)  # queue head that did not fit, and `releases` then
    iteration_time = config.iteration_time
    max_num_seqs = config.max_num_seqs or math.inf
    max_time = config.max_time if config.max_time is not None else math.inf
    max_steps = config.max_steps if config.max_steps is not None else math.inf
    record = (
        series.time.append,
        series.batch.append,
        series.queue.append,
        series.held.append,
        series.tokens.append,
        series.internal.append,
        series.padding.append,
        series.saved.append,
    )
    while finished < total:
        if not running and not waiting and not swapped:
            clock = max(clock, groups[arrived].request.arrival_time)  # idle: jump to the next arrival
        if clock >= max_time or step >= max_steps:
            break
        while arrived < total and groups[arrived].request.arrival_time <= clock:
            groups[arrived].arrival_step = step
            waiting.append(groups[arrived])
            arrived += 1

        preempted = cache.grow(step)
        for group in preempted:  # newest first, so the oldest ends up at the head of its queue
            del running[group.gid]
            num_seqs -= group.num_seqs
            base_sum -= group.num_seqs * group.base
            group.resume_len = group.length(step - 1)
            group.preemptions += 1
            (swapped if group.swapped else waiting).appendleft(group)

        prefill = 0
        if not preempted:
            for queue in (swapped, waiting):  # swapped-out requests resume before new ones start
                while queue:
                    group = queue[0]
                    if num_seqs + group.num_seqs > max_num_seqs:
                        break
                    if blocked[0] is group and blocked[1] == cache.releases:
                        break  # nothing was freed since it last failed to fit
                    length = group.resume_len + 1
                    group.base = length - step
                    group.finish_step = step + group.final_len - length
                    computed = cache.admit(group, step)
                    if computed is None:
                        blocked = (group, cache.releases)
                        break
                    queue.popleft()
                    prefill += computed
                    running[group.gid] = group
                    num_seqs += group.num_seqs
                    base_sum += group.num_seqs * group.base
                    if group.first_admit_step < 0:
                        group.first_admit_step = step
                    heapq.heappush(finishing, (group.finish_step, group.gid, group.epoch, group))
                if queue:
                    break

        saved = cache.saved_slots
        record[0](clock)
        record[1](num_seqs)
        record[2](len(waiting) + len(swapped))
        record[3](cache.held_slots)
        record[4](num_seqs * step + base_sum - saved)
        record[5](cache.internal_slots)
        record[6](cache.padding_slots)
        record[7](saved)
        if config.check_invariants:
            cache.check(step)
        if on_step is not None:
            on_step(StepView(step, clock, cache, running, waiting, swapped))

        duration = iteration_time(num_seqs, prefill, num_seqs * step + base_sum)
        if not duration > 0:
            raise SimulationConfigError(
                f"the iteration-time model returned {duration!r} s for step {step}; steps must take > 0 s"
            )
        while finishing and finishing[0][0] <= step:
            _, _, epoch, group = heapq.heappop(finishing)
            if epoch != group.epoch:
                continue  # preempted after this finish was queued
            cache.release(group)
            del running[group.gid]
            num_seqs -= group.num_seqs
            base_sum -= group.num_seqs * group.base
            group.finish_time = clock + duration
            finished += 1
        clock += duration
        step += 1
        if progress is not None and step % _PROGRESS_EVERY == 0:
            progress.update(finished - reported)
            reported = finished
    if progress is not None:
        progress.update(finished - reported)
    return series, clock


def _check_requests(requests: list[Request]) -> None:
    if not requests:
        raise SimulationConfigError("the request list is empty: nothing to simulate")
    for i, (earlier, later) in enumerate(itertools.pairwise(requests)):
        if later.arrival_time < earlier.arrival_time:
            raise SimulationConfigError(
                f"requests must be sorted by arrival_time: request at index {i + 1} arrives at "
                f"{later.arrival_time} s, before the one at index {i} ({earlier.arrival_time} s)"
            )
    ids = [request.request_id for request in requests]
    if len(set(ids)) != len(ids):
        raise SimulationConfigError("request ids must be distinct (they key the simulator's bookkeeping)")
