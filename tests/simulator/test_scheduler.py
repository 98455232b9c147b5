"""The scheduler vLLM runs: a token budget, chunked prefill, V0's prefill steps, TTFT/TPOT.

The event-driven loop is compared, step by step, with a literal token-by-token replay of the same
rules (`_replay`): every decoding sequence appends one token a step through a `BlockManager`, the
budget pays for decodes first, then for prompt chunks, and the newest resident is preempted when a
block is needed and none is free.
"""

from __future__ import annotations

import math
from collections import deque

import pytest

from pagedkv import BlockManager, OutOfBlocks
from pagedkv.simulator import (
    NaiveCache,
    PagedCache,
    Request,
    SimConfig,
    SimulationConfigError,
    StepTime,
    simulate,
    synthetic_workload,
)
from pagedkv.simulator.loop import StepView


def _workload(num: int, seed: int) -> list[Request]:
    return synthetic_workload(num, rate=30.0, prompt_range=(20, 900), output_range=(5, 200), seed=seed)


class _Entry:
    def __init__(self, request: Request, resume: int) -> None:
        self.request = request
        self.resume = resume
        self.computed = 0  # prefilling: tokens written
        self.length = -1  # decoding: tokens held (-1 while prefilling)


def _replay(
    requests: list[Request], num_blocks: int, block_size: int, budget: int, max_seqs: int, scheduler: str
) -> dict[str, list[int]]:
    """The scheduler's rules, one token at a time (n = 1, recompute, no prefix caching)."""
    bm = BlockManager(num_blocks, block_size)
    waiting: deque[_Entry] = deque()
    resident: list[_Entry] = []  # admission order
    out: dict[str, list[int]] = {"held": [], "tokens": [], "batch": [], "queue": [], "prefill": []}
    finish: dict[int, int] = {}
    step, arrived = 0, 0
    clock = 0.0
    preemptions = [0]

    def preempt_newest(grown: bool = False) -> _Entry:
        """The newest resident goes back to the queue; `grown`: it already wrote this step's token."""
        preemptions[0] += 1
        victim = resident.pop()
        bm.free(victim.request.request_id)
        victim.resume = victim.length - grown if victim.length >= 0 else victim.resume
        victim.computed, victim.length = 0, -1
        waiting.appendleft(victim)
        return victim

    def grow(entry: _Entry, tokens: int) -> bool:
        while True:
            try:
                bm.append(entry.request.request_id, tokens)
                return True
            except OutOfBlocks:
                if preempt_newest() is entry:
                    return False

    while len(finish) < len(requests):
        if not resident and not waiting:
            clock = max(clock, requests[arrived].arrival_time)
        while arrived < len(requests) and requests[arrived].arrival_time <= clock:
            waiting.append(_Entry(requests[arrived], requests[arrived].prompt_len))
            arrived += 1
        prefill, batch = 0, 0
        if scheduler == "v0" and waiting:  # a prefill step, if any prompt can be admitted
            left = budget
            admitted = []
            while waiting and len(resident) < max_seqs and waiting[0].resume <= left:
                entry = waiting[0]
                if not bm.can_allocate(entry.resume + 1):
                    break
                bm.allocate(entry.request.request_id, entry.resume + 1)
                waiting.popleft()
                entry.length = entry.resume + 1
                resident.append(entry)
                admitted.append(entry)
                left -= entry.resume
                prefill += entry.resume
            if admitted:
                batch = len(admitted)
        if not batch:
            before = preemptions[0]
            for entry in [e for e in resident if e.length >= 0]:  # every decoding sequence: one token
                if entry in resident and grow(entry, 1):
                    entry.length += 1
            if scheduler == "v0":
                while resident and bm.num_free_blocks < 1:  # a free block per running sequence
                    preempt_newest(grown=True)
            batch = sum(1 for e in resident if e.length >= 0)
            left = budget - batch
            for entry in [e for e in resident if e.length < 0]:  # prompt chunks, oldest first
                if left <= 0:
                    break
                if entry not in resident:
                    continue
                rest = entry.resume - entry.computed
                chunk = min(rest, left)
                if not grow(entry, chunk + 1 if chunk == rest else chunk):
                    continue
                entry.computed += chunk
                left -= chunk
                prefill += chunk
                if entry.computed == entry.resume:
                    entry.length = entry.resume + 1
                    batch += 1
            preempted = preemptions[0] > before
            while scheduler == "v1" and not preempted and waiting and len(resident) < max_seqs and left > 0:
                entry = waiting[0]
                whole = entry.resume <= left
                tokens = entry.resume + 1 if whole else left
                if not bm.can_allocate(tokens):
                    break
                bm.allocate(entry.request.request_id, tokens)
                waiting.popleft()
                resident.append(entry)
                if whole:
                    entry.length = entry.resume + 1
                    batch += 1
                    prefill += entry.resume
                    left -= entry.resume
                else:
                    entry.computed = left
                    prefill += left
                    left = 0
        out["held"].append((num_blocks - bm.num_free_blocks) * block_size)
        out["tokens"].append(sum(e.length if e.length >= 0 else e.computed for e in resident))
        out["batch"].append(batch)
        out["queue"].append(len(waiting))
        out["prefill"].append(prefill)
        for entry in [e for e in resident if e.length == e.request.total_len]:
            bm.free(entry.request.request_id)
            resident.remove(entry)
            finish[entry.request.request_id] = step
        clock += 0.02
        step += 1
    out["finish"] = [finish[r.request_id] for r in requests]
    return out


def _run(requests: list[Request], num_blocks: int, block_size: int, **config: object) -> tuple:
    prefills: list[int] = []

    def model(batch: int, prefill: int, context: int) -> float:
        prefills.append(prefill)
        return 0.02

    result = simulate(
        requests,
        PagedCache(num_blocks * block_size, block_size),
        SimConfig(step_time=model, check_invariants=True, **config),  # type: ignore[arg-type]
    )
    return result, prefills


@pytest.mark.parametrize(
    ("budget", "max_seqs", "block_size", "num_blocks", "seed"),
    [(256, 64, 16, 400, 1), (512, 32, 16, 300, 2), (100, 100, 7, 900, 3), (2048, 256, 16, 2000, 4)],
)
def test_v1_with_a_token_budget_matches_the_token_by_token_replay(
    budget: int, max_seqs: int, block_size: int, num_blocks: int, seed: int
) -> None:
    requests = _workload(80, seed)
    result, prefills = _run(
        requests, num_blocks, block_size, max_num_batched_tokens=budget, max_num_seqs=max_seqs
    )
    expected = _replay(requests, num_blocks, block_size, budget, max_seqs, "v1")
    assert list(result.series.batch) == expected["batch"]
    assert prefills == expected["prefill"]
    assert list(result.series.held) == expected["held"]
    assert list(result.series.tokens) == expected["tokens"]
    assert list(result.series.queue) == expected["queue"]
    assert result.finish_step == expected["finish"]
    if num_blocks < 1000:
        assert result.counters["preemptions_recompute"] > 0  # the comparison covers preemption


@pytest.mark.parametrize(("budget", "num_blocks", "seed"), [(2048, 400, 5), (1200, 250, 6)])
def test_v0_prefill_steps_match_the_token_by_token_replay(budget: int, num_blocks: int, seed: int) -> None:
    requests = _workload(70, seed)
    result, prefills = _run(
        requests, num_blocks, 16, max_num_batched_tokens=budget, max_num_seqs=64, scheduler="v0"
    )
    expected = _replay(requests, num_blocks, 16, budget, 64, "v0")
    assert list(result.series.batch) == expected["batch"]
    assert prefills == expected["prefill"]
    assert list(result.series.held) == expected["held"]
    assert list(result.series.tokens) == expected["tokens"]
    assert result.finish_step == expected["finish"]
    assert result.counters["preemptions_recompute"] > 0


def test_the_token_budget_is_never_exceeded() -> None:
    prefills: list[int] = []
    decodes: list[int] = []  # sequences that decoded: running now and at the end of the step before
    last: set[int] = set()

    def model(batch: int, prefill: int, context: int) -> float:
        prefills.append(prefill)
        return 0.01

    def observe(view: StepView) -> None:
        nonlocal last
        decodes.append(sum(g.num_seqs for gid, g in view.running.items() if gid in last))
        last = set(view.running)

    requests = _workload(150, 7)
    result = simulate(
        requests,
        PagedCache(40_000, 16),
        SimConfig(step_time=model, max_num_batched_tokens=300, max_num_seqs=48, n=2),
        on_step=observe,
    )
    used = [d + p for d, p in zip(decodes, prefills, strict=True)]
    assert max(used) == 300  # the budget binds...
    assert all(u <= 300 for u in used)  # ...and is never exceeded
    assert result.counters["preemptions_recompute"] == 0
    assert sum(prefills) == sum(r.prompt_len for r in requests)  # each prompt computed once, whole


def test_a_prompt_longer_than_the_budget_is_prefilled_chunk_by_chunk() -> None:
    request = Request(0, 0.0, prompt_len=1000, output_len=3)
    steps: list[tuple[int, int, int]] = []  # (prompt tokens written, blocks held, running)

    def observe(view: StepView) -> None:
        prefilling = view.prefilling.get(0)
        steps.append(
            (prefilling.computed if prefilling else -1, view.cache.usage().held // 16, len(view.running))
        )

    result = simulate(
        [request],
        PagedCache(4000, 16),
        SimConfig(step_time=StepTime(0.1), max_num_batched_tokens=256, max_num_seqs=8),
        on_step=observe,
    )
    # 256 + 256 + 256 tokens of prompt, then the last 232 with the first token; blocks follow the chunks
    assert steps[:4] == [(256, 16, 0), (512, 32, 0), (768, 48, 0), (-1, 63, 1)]
    assert list(result.series.batch) == [0, 0, 0, 1, 1, 1]
    summary = result.summary()
    assert summary["ttft_s_mean"] == pytest.approx(0.4)  # four prefill steps of 0.1 s
    assert summary["tpot_s_mean"] == pytest.approx(0.1)
    assert summary["e2e_s_mean"] == pytest.approx(0.6)
    assert summary["normalized_s_mean"] == pytest.approx(0.2)


def test_ttft_of_a_lone_request_is_its_prefill_step_time() -> None:
    time_model = StepTime(0.01, per_prefill_token_s=1e-4, per_seq_s=1e-3)
    request = Request(0, 2.0, prompt_len=500, output_len=4)
    result = simulate([request], PagedCache(4000, 16), SimConfig(step_time=time_model))
    prefill_step = 0.01 + 500 * 1e-4 + 1e-3  # its prompt, and the first token of a one-sequence batch
    decode_step = 0.01 + 1e-3
    summary = result.summary()
    assert summary["ttft_s_p50"] == pytest.approx(prefill_step)
    assert summary["tpot_s_p99"] == pytest.approx(decode_step)
    assert summary["e2e_s_mean"] == pytest.approx(prefill_step + 3 * decode_step)
    assert result.requests.first_token_time[0] == pytest.approx(2.0 + prefill_step)


def test_v0_stalls_decodes_while_it_prefills() -> None:
    requests = [Request(0, 0.0, 100, 10), Request(1, 0.25, 100, 10)]
    result = simulate(
        requests,
        PagedCache(4000, 16),
        SimConfig(step_time=StepTime(0.1), scheduler="v0", max_num_batched_tokens=512, max_num_seqs=8),
    )
    # step 0 prefills request 0; steps 1-2 decode it; step 3 (t = 0.3) prefills request 1 alone
    assert list(result.series.batch[:5]) == [1, 1, 1, 1, 2]
    assert result.requests.first_token_time[1] == pytest.approx(0.4)
    v1 = simulate(
        requests,
        PagedCache(4000, 16),
        SimConfig(step_time=StepTime(0.1), max_num_batched_tokens=512, max_num_seqs=8),
    )
    assert list(v1.series.batch[:5]) == [1, 1, 1, 2, 2]  # V1 prefills request 1 beside the decode
    assert v1.summary()["e2e_s_mean"] < result.summary()["e2e_s_mean"]


def test_reservation_caches_prefill_in_chunks_too() -> None:
    request = Request(0, 0.0, prompt_len=600, output_len=2)
    result = simulate(
        [request],
        NaiveCache(4000, 1000),
        SimConfig(step_time=StepTime(0.1), max_num_batched_tokens=256, max_num_seqs=4),
    )
    assert list(result.series.batch) == [0, 0, 1, 1]
    assert list(result.series.tokens) == [256, 512, 601, 602]
    assert list(result.series.held) == [1000] * 4  # the row is reserved whole at admission


def test_budget_settings_are_checked() -> None:
    with pytest.raises(SimulationConfigError, match="needs max_num_seqs <= 100"):
        SimConfig(max_num_batched_tokens=100)
    with pytest.raises(SimulationConfigError, match="needs max_num_seqs <= 100"):
        SimConfig(max_num_batched_tokens=100, max_num_seqs=200)
    with pytest.raises(SimulationConfigError, match="scheduler='v2'"):
        SimConfig(scheduler="v2")
    request = Request(0, 0.0, prompt_len=600, output_len=10)
    with pytest.raises(SimulationConfigError, match="may need 609 tokens prefilled in one step"):
        simulate(
            [request],
            PagedCache(4000),
            SimConfig(max_num_batched_tokens=512, max_num_seqs=8, enable_chunked_prefill=False),
        )


def test_latency_percentiles_over_many_requests() -> None:
    requests = _workload(200, 9)
    result = simulate(
        requests,
        PagedCache(30_000),
        SimConfig(step_time=StepTime(0.02), max_num_batched_tokens=1024, max_num_seqs=64),
    )
    summary = result.summary()
    arrival = result.requests.arrival_time
    ttfts = sorted(f - a for f, a in zip(result.requests.first_token_time, arrival, strict=True))
    assert summary["ttft_s_p50"] == pytest.approx((ttfts[99] + ttfts[100]) / 2)
    assert summary["ttft_s_p99"] == pytest.approx(ttfts[197] + 0.01 * (ttfts[198] - ttfts[197]))
    assert summary["ttft_s_p50"] <= summary["ttft_s_p90"] <= summary["ttft_s_p99"]
    assert all(not math.isnan(summary[f"{k}_s_p99"]) for k in ("ttft", "tpot", "e2e", "normalized"))
