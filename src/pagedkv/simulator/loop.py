"""The step loop: one engine iteration a step, the scheduler vLLM runs, driven by events not tokens.

Public API (re-exported by `pagedkv.simulator`; what `pagedkv simulate` and `pagedkv paper` call)::

    from pagedkv.simulator import (
        SimConfig, StepTime, NaiveCache, OrcaCache, PagedCache,
        simulate, compare, standard_caches, synthetic_workload, load_trace,
    )
    requests = synthetic_workload(1000, rate=10.0, seed=0)           # or load_trace(path).requests
    caches = standard_caches(kv_slots=144_000, max_seq_len=4500)      # naive, orca-max/pow2/oracle, paged
    results = compare(requests, caches, SimConfig(step_time=StepTime(0.05)))
    results["paged"].summary(window=(300, 900))                       # means over a steady state
    results["paged"].summary()["ttft_s_p99"]                          # latency percentiles

- ``simulate(requests, cache, config)`` runs one fresh cache and returns a `SimResult`;
  ``compare`` runs several caches, which must have the same `capacity_slots`, on the identical list.
- Caches: ``NaiveCache(kv_slots, max_seq_len)``, ``OrcaCache(kv_slots, max_seq_len, "max" | "pow2" |
  "oracle", block_size=16)``, ``PagedCache(kv_slots, block_size, enable_prefix_caching=,
  watermark=, preemption="recompute" | "swap", swap_slots=)``.
- `SimConfig`: the time model, ``n`` / ``beam_width``, ``max_num_seqs``, ``max_num_batched_tokens``,
  ``scheduler`` ("v1" | "v0"), ``enable_chunked_prefill``, ``max_time``, ``seed``.

One step under the V1 scheduler (vLLM V1's order, so an admission is never undone in its own step):
  1. requests that have arrived by the step's start time join the waiting queue;
  2. decoding sequences that cross a block boundary get their block (paged); when none is free the
     newest resident request is preempted;
  3. the token budget (`max_num_batched_tokens`) pays for one token per decoding sequence first,
     then for the next chunk of prompts already being prefilled, oldest first;
  4. if nothing was preempted: swapped-out requests resume, then waiting requests are admitted, FCFS,
     while sequences (`max_num_seqs`), budget and memory allow; a prompt whose remainder fits in the
     budget is prefilled whole and produces its first token in this step, a longer one gets a chunk
     (chunked prefill) and continues next step; admission stops at the first request that does not
     fit (head-of-line, no skipping);
  5. every decoding sequence generates one token: the step's metrics are recorded;
  6. requests whose last token was this step's free their memory.
Under V0 a step is either a prefill step (when waiting prompts can be admitted: only they run, whole,
and decodes wait) or a decode step (steps 2, resuming swapped-out requests, 5, 6).

Time. A decoding group's length is ``tick + base``, where the tick counts decode steps (every step
under V1; V0's prefill steps do not tick), so recording is arithmetic; the only per-request work is at
events: arrivals, admissions and prefill chunks, finishes (a heap keyed by finish tick), and in the
paged cache block crossings and beam forks. No loop runs once per generated token. Admission is
retried after a memory failure only once memory was released or a smaller chunk is offered: nothing
else can make the head fit.
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
from pagedkv.simulator.cache import Admission, KVCache, Preemption
from pagedkv.simulator.config import SimConfig, SimulationConfigError
from pagedkv.simulator.group import Group
from pagedkv.simulator.metrics import RequestResults, SimResult, StepSeries, StepTotals, StepTrend
from pagedkv.simulator.naive import NaiveCache
from pagedkv.simulator.orca import OrcaCache
from pagedkv.simulator.paged import PagedCache
from pagedkv.simulator.paged_counts import CountingPagedCache, counts_suffice
from pagedkv.simulator.workload import Request

CACHE_KINDS = ("naive", "orca-max", "orca-pow2", "orca-oracle", "paged")
_PROGRESS_EVERY = 2048  # steps


@dataclass(frozen=True, slots=True)
class StepView:
    """What an `on_step` observer sees at the end of a step (after its tokens are written and its
    metrics recorded, before the requests finishing in it free their memory). Read-only: the loop
    and the cache own everything here; an observer must not change it.

    A decoding group's length is ``group.length(tick)``; a prefilling group has written
    ``group.computed`` tokens of its prompt.
    """

    step: int
    tick: int
    time: float
    cache: KVCache
    running: Mapping[int, Group]  # request id -> decoding group, in admission order
    prefilling: Mapping[int, Group]  # request id -> group whose prompt is still being prefilled
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
    num_seqs: int = 1,
    block_tables: bool = False,
    enable_prefix_caching: bool = False,
    **paged_options: object,
) -> list[KVCache]:
    """Fresh caches of the given kinds, all with `kv_slots` token slots (equal memory).

    "paged" is a `CountingPagedCache` (block counts; the same results, several times faster) when
    counts decide the run — prefix caching off and `num_seqs` (the run's `SimConfig.num_seqs`) one —
    and a `PagedCache` (every block table in a `BlockManager`) otherwise or when `block_tables`.
    """
    caches: list[KVCache] = []
    for kind in kinds:
        if kind == "naive":
            caches.append(NaiveCache(kv_slots, max_seq_len))
        elif kind.startswith("orca-") and kind in CACHE_KINDS:
            caches.append(OrcaCache(kv_slots, max_seq_len, kind[5:], block_size=orca_block_size))
        elif kind == "paged" and not block_tables and counts_suffice(enable_prefix_caching, num_seqs):
            caches.append(CountingPagedCache(kv_slots, block_size, **paged_options))  # type: ignore[arg-type]
        elif kind == "paged":
            caches.append(
                PagedCache(kv_slots, block_size, enable_prefix_caching=enable_prefix_caching, **paged_options)  # type: ignore[arg-type]
            )
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
    keep_series: bool = True,
    window: tuple[float, float] | None = None,
) -> dict[str, SimResult]:
    """Run every cache on the identical request list; results by cache name, in the given order.

    `progress` advances by one for every request finished by any cache (its total should be
    ``len(caches) * len(requests)``); `on_step(cache_name)` gives each run's observer (or None).
    """
    if not caches:
        raise SimulationConfigError("no cache to compare: give at least one")
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
        results[cache.name] = simulate(
            requests,
            cache,
            config,
            progress=progress,
            on_step=observer,
            keep_series=keep_series,
            window=window,
        )
    return results


def simulate(
    requests: list[Request],
    cache: KVCache,
    config: SimConfig | None = None,
    *,
    progress: Progress | None = None,
    on_step: StepObserver | None = None,
    keep_series: bool = True,
    window: tuple[float, float] | None = None,
) -> SimResult:
    """Serve `requests` (sorted by arrival) with a fresh `cache`; see the module docstring.

    `keep_series`: keep every step's metrics (`SimResult.series`; 64 bytes a step) — without it,
    memory does not grow with the number of steps and summaries cover the whole run or `window`
    (``(start_s, end_s)``, given here up front). `progress` advances by one for every finished
    request; `on_step` is called at the end of every step with a `StepView` (it slows the run down).
    """
    config = config or SimConfig()
    _check_requests(requests)
    if window is not None and not window[0] < window[1]:
        raise SimulationConfigError(f"window {tuple(window)!r}: the start must be before the end")
    started = time.perf_counter()
    cache.start(config, requests)
    check_budget(requests, config)
    loop = _Loop(requests, cache, config, keep_series, window, progress, on_step)
    loop.run()
    return SimResult(
        cache=cache.name,
        capacity_slots=cache.capacity_slots,
        layout=cache.describe(),
        config=config,
        totals=loop.totals,
        trend=loop.trend,
        requests=loop.results,
        counters=cache.counters(),
        end_time=loop.clock,
        wall_s=time.perf_counter() - started,
        series=loop.series,
        window=window,
        window_totals=loop.window_totals,
    )


class _Loop:
    """One run's state; `run` steps until every request finished or the clock ran out."""

    def __init__(
        self,
        requests: list[Request],
        cache: KVCache,
        config: SimConfig,
        keep_series: bool,
        window: tuple[float, float] | None,
        progress: Progress | None,
        on_step: StepObserver | None,
    ) -> None:
        self.requests, self.cache, self.config = requests, cache, config
        self.progress, self.on_step = progress, on_step
        capacity = cache.capacity_slots
        self.totals = StepTotals(capacity)
        self.trend = StepTrend(capacity)
        self.series = StepSeries() if keep_series else None
        self.window = window
        self.window_totals = StepTotals(capacity) if window is not None else None
        self.results = RequestResults.empty(
            [r.arrival_time for r in requests], [r.output_len for r in requests]
        )
        self.waiting: deque[Group] = deque()
        self.swapped: deque[Group] = deque()
        self.prefilling: dict[int, Group] = {}
        self.running: dict[int, Group] = {}  # decoding groups, admission order
        self.finishing: list[tuple[int, int, int, Group]] = []  # (finish tick, request id, epoch, group)
        self.num_seqs = 0  # decoding sequences
        self.base_sum = 0  # sum of num_seqs * base over decoding groups: their lengths sum to n*tick + this
        self.prefill_seqs = 0  # sequences of prefilling groups (they count against max_num_seqs)
        self.step = self.tick = 0
        self.clock = 0.0
        self.arrived = self.finished = 0
        # the head that last failed to fit in memory, `releases` then, and the budget it was offered
        self.blocked: tuple[Group | None, int, float] = (None, -1, 0.0)
        self.max_num_seqs = config.max_num_seqs or math.inf
        self.limit = config.max_num_batched_tokens
        self.v0 = config.scheduler == "v0"
        self.chunked = config.chunked_prefill

    # ------------------------------------------------------------------ the run

    def run(self) -> None:
        total, reported = len(self.requests), 0
        max_time = self.config.max_time if self.config.max_time is not None else math.inf
        requests = self.requests
        while self.finished < total:
            if not (self.running or self.prefilling or self.waiting or self.swapped):
                self.clock = max(self.clock, requests[self.arrived].arrival_time)  # idle: jump
            if self.clock >= max_time:
                break
            if self.arrived < total and requests[self.arrived].arrival_time <= self.clock:
                self._arrive()
            if self.v0 and self.waiting and not self.swapped and self._prefill_step():
                self.step += 1
                continue
            self._decode_step()
            self.step += 1
            self.tick += 1
            if self.progress is not None and self.step % _PROGRESS_EVERY == 0:
                self.progress.update(self.finished - reported)
                reported = self.finished
        if self.progress is not None:
            self.progress.update(self.finished - reported)

    def _arrive(self) -> None:
        requests, config, clock, step = self.requests, self.config, self.clock, self.step
        arrival_step = self.results.arrival_step
        while self.arrived < len(requests) and requests[self.arrived].arrival_time <= clock:
            i = self.arrived
            request = requests[i]
            arrival_step[i] = step
            self.waiting.append(Group(request, i, config.num_seqs))
            self.arrived += 1

    def _decode_step(self) -> None:
        """A step that decodes every running sequence (and, under V1, admits and prefills)."""
        cache, tick = self.cache, self.tick
        preempted = cache.grow(tick)
        self._take_off(preempted)
        budget = None if self.limit is None else self.limit - self.num_seqs
        prefill, context = 0, 0
        first_tokens: list[Group] = []
        for group in list(self.prefilling.values()) if self.prefilling else ():  # oldest first
            if budget is not None and budget <= 0:
                break
            if group.gid not in self.prefilling:
                continue  # preempted by an earlier chunk of this step
            assert budget is not None  # prompts are only ever split under a token budget
            admission, more = cache.extend(group, tick, budget)
            if more:
                preempted = [*preempted, *more]
                self._take_off(more)
            if group.gid not in self.prefilling:
                continue
            budget -= admission.computed
            prefill += admission.computed
            context += self._prefilled(group, admission, tick, first_tokens)
        if not preempted and self.swapped:
            budget, computed, attended = self._admit(self.swapped, budget, tick, first_tokens)
            prefill += computed
            context += attended
        if not preempted and not self.v0 and self.waiting and not self.swapped:
            budget, computed, attended = self._admit(self.waiting, budget, tick, first_tokens)
            prefill += computed
            context += attended
        lengths = self.num_seqs * tick + self.base_sum
        self._end_step(self.num_seqs, prefill, lengths + context, lengths, tick, first_tokens)

    def _prefill_step(self) -> bool:
        """V0: admit waiting prompts, whole, in a step of their own; False (no step) if none fits."""
        first_tokens: list[Group] = []
        before = self.num_seqs
        tick = self.tick - 1  # decodes do not advance in this step: new groups count from the last tick
        _, prefill, _ = self._admit(self.waiting, self.limit, tick, first_tokens)
        if not first_tokens:
            return False
        batch = self.num_seqs - before
        lengths = self.num_seqs * tick + self.base_sum
        new = sum(g.num_seqs * g.length(tick) for g in first_tokens)
        self._end_step(batch, prefill, new, lengths, tick, first_tokens)
        return True

    # ------------------------------------------------------------------ admission and prefill

    def _admit(
        self, queue: deque[Group], budget: int | None, tick: int, first_tokens: list[Group]
    ) -> tuple[int | None, int, int]:
        """Admit from the head of `queue` while sequences, budget and memory allow.

        Returns the budget left, the tokens computed and the context they attended over.
        """
        cache, computed, attended = self.cache, 0, 0
        while queue:
            group = queue[0]
            if self.num_seqs + self.prefill_seqs + group.num_seqs > self.max_num_seqs:
                break
            if budget is not None:
                if group.swapped:
                    if budget < group.num_seqs:  # it decodes in this step
                        break
                elif budget <= 0 or (not self.chunked and group.resume_len > budget):
                    break
            offered = math.inf if budget is None else budget
            blocked_group, releases, blocked_budget = self.blocked
            if blocked_group is group and releases == cache.releases and offered >= blocked_budget:
                break  # nothing was freed since it last failed to fit, and it asks for no less now
            admission = cache.admit(group, tick, budget if self.chunked else None)
            if admission is None:
                self.blocked = (group, cache.releases, offered if self.chunked else 0.0)
                break
            queue.popleft()
            if self.results.first_admit_step[group.index] < 0:
                self.results.first_admit_step[group.index] = self.step
            group.swapped = False
            if budget is not None:
                budget -= admission.computed if admission.computed or not admission.done else group.num_seqs
            computed += admission.computed
            if not admission.done:
                self.prefilling[group.gid] = group
                self.prefill_seqs += group.num_seqs
            attended += self._prefilled(group, admission, tick, first_tokens)
        return budget, computed, attended

    def _prefilled(self, group: Group, admission: Admission, tick: int, first_tokens: list[Group]) -> int:
        """Book a prefill step of `group`; returns the context its chunk attended over (0 when done:
        a group that starts decoding is counted with the decoding lengths)."""
        group.computed += admission.hits + admission.computed
        if not admission.done:
            return group.computed
        if group.gid in self.prefilling:
            del self.prefilling[group.gid]
            self.prefill_seqs -= group.num_seqs
        length = group.resume_len + 1
        group.base = length - tick
        group.finish_tick = tick + group.final_len - length
        self.running[group.gid] = group
        self.num_seqs += group.num_seqs
        self.base_sum += group.num_seqs * group.base
        heapq.heappush(self.finishing, (group.finish_tick, group.gid, group.epoch, group))
        first_tokens.append(group)
        return 0

    def _take_off(self, preempted: list[Preemption]) -> None:
        """Requeue preempted groups at the head of their queue (newest first, so the oldest leads)."""
        for group, swapped in preempted:
            if group.gid in self.running:
                del self.running[group.gid]
                self.num_seqs -= group.num_seqs
                self.base_sum -= group.num_seqs * group.base
                group.resume_len = group.length(self.tick - 1)
            else:
                del self.prefilling[group.gid]
                self.prefill_seqs -= group.num_seqs
            group.computed = 0
            group.swapped = swapped
            group.epoch += 1
            group.preemptions += 1
            self.results.preemptions[group.index] += 1
            (self.swapped if swapped else self.waiting).appendleft(group)

    # ------------------------------------------------------------------ recording and finishing

    def _end_step(
        self, batch: int, prefill: int, context: int, lengths: int, tick: int, first_tokens: list[Group]
    ) -> None:
        cache, clock = self.cache, self.clock
        held, internal, padding, saved, prefill_held = cache.usage()
        queue = len(self.waiting) + len(self.swapped)
        tokens = lengths + prefill_held - saved
        self.totals.add(clock, batch, queue, held, tokens, internal, padding, saved)
        self.trend.add(clock, batch, held, tokens)
        if self.series is not None:
            self.series.add(clock, batch, queue, held, tokens, internal, padding, saved)
        if self.window is not None and self.window[0] <= clock < self.window[1]:
            assert self.window_totals is not None
            self.window_totals.add(clock, batch, queue, held, tokens, internal, padding, saved)
        if self.config.check_invariants:
            cache.check(tick)
        if self.on_step is not None:
            view = StepView(
                self.step, tick, clock, cache, self.running, self.prefilling, self.waiting, self.swapped
            )
            self.on_step(view)
        duration = self.config.step_time(batch, prefill, context)
        if not duration > 0:
            raise SimulationConfigError(
                f"the step-time model returned {duration!r} s for step {self.step}; steps must take > 0 s"
            )
        end = clock + duration
        first_token_time = self.results.first_token_time
        for group in first_tokens:
            if math.isnan(first_token_time[group.index]):
                first_token_time[group.index] = end
        if self.finishing and self.finishing[0][0] <= tick:
            self._finish(tick, end)
        self.clock = end

    def _finish(self, tick: int, end: float) -> None:
        finishing, results = self.finishing, self.results
        while finishing and finishing[0][0] <= tick:
            _, _, epoch, group = heapq.heappop(finishing)
            if epoch != group.epoch:
                continue  # preempted after this finish was queued
            self.cache.release(group)
            del self.running[group.gid]
            self.num_seqs -= group.num_seqs
            self.base_sum -= group.num_seqs * group.base
            group.epoch += 1
            results.finish_step[group.index] = self.step
            results.finish_time[group.index] = end
            self.finished += 1


def _check_requests(requests: list[Request]) -> None:
    if not requests:
        raise SimulationConfigError("the request list is empty: nothing to simulate")
    for i, (earlier, later) in enumerate(itertools.pairwise(requests)):
        if later.arrival_time < earlier.arrival_time:
            raise SimulationConfigError(
                f"requests must be sorted by arrival_time: request at index {i + 1} arrives at "
                f"{later.arrival_time} s, before the one at index {i} ({earlier.arrival_time} s)"
            )
    ids = {request.request_id for request in requests}
    if len(ids) != len(requests):
        raise SimulationConfigError("request ids must be distinct (they key the simulator's bookkeeping)")


def check_budget(requests: list[Request], config: SimConfig) -> None:
    """Without chunked prefill a prompt (or a recompute) must fit in one step's budget, or it never runs."""
    budget = config.max_num_batched_tokens
    if budget is None or config.chunked_prefill:
        return
    longest = max(requests, key=lambda r: r.total_len)
    if longest.total_len - 1 > budget:
        raise SimulationConfigError(
            f"request {longest.request_id} may need {longest.total_len - 1:,} tokens prefilled in one step "
            f"(prompt {longest.prompt_len:,} + output {longest.output_len:,}, if it is preempted near the "
            f"end), more than the token budget of {budget:,} a step, and prompts are not chunked; raise the "
            "budget to at least the longest sequence (vLLM requires it too), or chunk prefills"
        )
