"""The step loop: identical requests for every cache, event-driven == token-by-token, preemption,
sharing, prefix caching, the time model."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path

import pytest

from pagedkv import BlockManager, OutOfBlocks
from pagedkv.simulator import (
    NaiveCache,
    PagedCache,
    Request,
    SimConfig,
    SimulationConfigError,
    StepTime,
    compare,
    load_trace,
    simulate,
    standard_caches,
    synthetic_workload,
)
from pagedkv.simulator.token_ids import prompt_token_ids

FIXTURES = Path(__file__).parent / "fixtures"


def _small(num: int = 120, seed: int = 5) -> list[Request]:
    return synthetic_workload(num, rate=25.0, prompt_range=(20, 700), output_range=(5, 260), seed=seed)


# --- every cache serves the same requests --------------------------------------------------------


def test_every_cache_serves_exactly_the_same_requests() -> None:
    requests = _small()
    results = compare(requests, standard_caches(16_000, 1000, watermark=0.01))
    expected_tokens = sum(r.output_len for r in requests)
    arrivals = {name: result.arrival_step for name, result in results.items()}
    for name, result in results.items():
        assert result.num_requests == len(requests) and result.finished == len(requests), name
        # every request generated exactly its output, once (recompute re-prefills, never re-generates)
        assert sum(result.series.batch) == expected_tokens, name
        assert all(a >= 0 for a in arrivals[name])
        for request, admit, finish in zip(requests, result.first_admit_step, result.finish_step, strict=True):
            assert finish - admit + 1 >= request.output_len, name


def test_default_workload_paged_fills_held_blocks_naive_wastes_half() -> None:
    """The seed's claim on the seed's workload (1000 requests, 4,500-token rows, 32 rows of memory)."""
    requests = synthetic_workload()
    results = compare(requests, standard_caches(32 * 4500, 4500, kinds=("naive", "paged"), watermark=0.01))
    paged, naive = results["paged"].summary(), results["naive"].summary()
    assert paged["token_util_of_held"] >= 0.95
    assert 0.42 <= naive["token_util_of_held"] <= 0.58
    assert paged["batch_mean"] > 1.5 * naive["batch_mean"]
    assert naive["held_pct_mean"] > 90.0  # the system is loaded: memory is taken, just not used


# --- event-driven == token-by-token --------------------------------------------------------------


def _token_by_token(requests: list[Request], num_blocks: int, block_size: int, watermark: float, dt: float):
    """The loop's definition, literally: every running sequence appends one token every step, in
    admission order, preempting the newest (recompute) when a block is needed and none is free."""
    bm = BlockManager(num_blocks, block_size, watermark=watermark)
    waiting: deque[Request] = deque()
    running: list[list] = []  # [request, length], oldest first
    resume = {r.request_id: r.prompt_len for r in requests}
    finish: dict[int, int] = {}
    held, tokens, batch, queue = [], [], [], []
    step, clock, arrived = 0, 0.0, 0
    while len(finish) < len(requests):
        if not running and not waiting:
            clock = max(clock, requests[arrived].arrival_time)
        while arrived < len(requests) and requests[arrived].arrival_time <= clock:
            waiting.append(requests[arrived])
            arrived += 1
        preempted = False
        for entry in list(running):
            if entry not in running:
                continue
            while True:
                try:
                    bm.append(entry[0].request_id, 1)
                    entry[1] += 1
                    break
                except OutOfBlocks:
                    victim = running.pop()
                    bm.free(victim[0].request_id)
                    resume[victim[0].request_id] = victim[1]
                    waiting.appendleft(victim[0])
                    preempted = True
                    if victim is entry:
                        break
        while waiting and not preempted:
            request = waiting[0]
            length = resume[request.request_id] + 1
            if not bm.can_allocate(length):
                break
            bm.allocate(request.request_id, length)
            running.append([waiting.popleft(), length])
        held.append((num_blocks - bm.num_free_blocks) * block_size)
        tokens.append(sum(length for _, length in running))
        batch.append(len(running))
        queue.append(len(waiting))
        for entry in [e for e in running if e[1] == e[0].total_len]:
            bm.free(entry[0].request_id)
            running.remove(entry)
            finish[entry[0].request_id] = step
        clock += dt
        step += 1
    return held, tokens, batch, queue, [finish[r.request_id] for r in requests]


@pytest.mark.parametrize(("block_size", "watermark"), [(16, 0.0), (16, 0.01), (7, 0.0), (1, 0.0)])
def test_event_driven_loop_matches_token_by_token_replay(block_size: int, watermark: float) -> None:
    requests = _small(90, seed=block_size)
    num_blocks = 9000 // block_size
    result = simulate(
        requests,
        PagedCache(num_blocks * block_size, block_size, watermark=watermark),
        SimConfig(step_time=StepTime(0.02), check_invariants=True),
    )
    held, tokens, batch, queue, finish = _token_by_token(requests, num_blocks, block_size, watermark, 0.02)
    assert result.counters["preemptions_recompute"] > 0  # the comparison covers preemption
    assert list(result.series.held) == held
    assert list(result.series.tokens) == tokens
    assert list(result.series.batch) == batch
    assert list(result.series.queue) == queue
    assert result.finish_step == finish


# --- preemption ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_preemption_finishes_every_request(mode: str) -> None:
    requests = _small(150, seed=11)
    result = simulate(requests, PagedCache(6000, 16, preemption=mode), SimConfig(check_invariants=True))
    assert result.finished == len(requests)
    assert sum(result.series.batch) == sum(r.output_len for r in requests)
    counters = result.counters
    if mode == "recompute":
        assert counters["preemptions_recompute"] > 0 and counters["swap_outs"] == 0
    else:
        assert counters["swap_outs"] > 0 and counters["swap_ins"] == counters["swap_outs"]
        assert counters["preemptions_recompute"] == 0
        assert 0 < counters["swap_peak_blocks"] <= 6000 // 16
    assert sum(result.preemptions) == counters["preemptions_recompute"] + counters["swap_outs"]


def test_full_swap_pool_falls_back_to_recompute() -> None:
    requests = _small(150, seed=11)
    result = simulate(requests, PagedCache(6000, 16, preemption="swap", swap_slots=700))
    assert result.finished == len(requests)
    assert result.counters["swap_fallbacks"] > 0
    assert result.counters["swap_peak_blocks"] <= 700 // 16


# --- sharing -------------------------------------------------------------------------------------


def test_parallel_samples_share_the_prompt_blocks() -> None:
    request = Request(0, 0.0, prompt_len=100, output_len=40)  # 6 full prompt blocks of 16
    result = simulate([request], PagedCache(4000, 16), SimConfig(n=3, check_invariants=True))
    assert list(result.series.batch) == [3] * 40
    assert list(result.series.saved) == [2 * 6 * 16] * 40  # two extra sequences, six shared blocks each
    assert result.counters["cow_copies"] == 2  # the partly filled prompt block, copied by two samples
    # the six full prompt blocks are stored once; each sample owns a copy of the prompt's last 4
    # tokens (copy-on-write) and its own 40 output tokens
    assert result.series.tokens[-1] == 96 + 3 * (4 + 40)


def test_beam_search_shares_blocks_beyond_the_prompt() -> None:
    requests = _small(60, seed=2)
    beams = simulate(requests, PagedCache(40_000), SimConfig(beam_width=4, check_invariants=True))
    samples = simulate(requests, PagedCache(40_000), SimConfig(n=4))
    assert beams.finished == len(requests)
    assert beams.counters["cow_copies"] > samples.counters["cow_copies"]  # every fork copies on write
    # beams also share the output their common ancestors generated, so they save more than samples
    assert beams.summary()["sharing_savings_pct"] > samples.summary()["sharing_savings_pct"] + 5.0
    never_pruned = simulate(requests, PagedCache(40_000), SimConfig(beam_width=4, beam_prune_prob=0.0))
    assert list(never_pruned.series.saved) == list(
        samples.series.saved
    )  # no forks: exactly parallel sampling


def test_sampling_in_naive_and_orca_takes_a_row_or_chunk_per_sequence() -> None:
    request = Request(0, 0.0, prompt_len=100, output_len=40)
    result = simulate([request], NaiveCache(4000, 200), SimConfig(n=3))
    assert list(result.series.held) == [3 * 200] * 40 and list(result.series.saved) == [0] * 40


# --- prefix caching ------------------------------------------------------------------------------


def test_mooncake_hash_ids_become_shared_tokens() -> None:
    trace = load_trace(FIXTURES / "mooncake.jsonl")
    first, second = trace.requests[0], trace.requests[1]  # hash ids (0, 1, 2) and (0, 1)
    a, b = prompt_token_ids(first), prompt_token_ids(second)
    assert a[:1024] == b and len(a) == first.prompt_len
    unshared = Request(9, 0.0, prompt_len=600, output_len=1)
    assert not set(prompt_token_ids(unshared)) & set(a)


def test_prefix_cache_hits_where_the_trace_says_prompts_share() -> None:
    trace = load_trace(FIXTURES / "mooncake.jsonl")
    result = simulate(
        trace.requests, PagedCache(50_000, enable_prefix_caching=True), SimConfig(check_invariants=True)
    )
    # request 1 repeats blocks 0, 1 (1,024 tokens); request 2 repeats block 0 (512); 3 shares nothing
    assert result.counters["prompt_hit_tokens"] == 1024 + 512
    assert result.summary()["prefix_hit_rate"] == pytest.approx(
        1536 / sum(r.prompt_len for r in trace.requests)
    )
    off = simulate(trace.requests, PagedCache(50_000))
    assert off.summary()["prefix_hit_rate"] is None


def test_real_mooncake_trace_hit_rate_matches_its_shared_prefixes(real_trace: Callable[[str], Path]) -> None:
    requests = load_trace(real_trace("synthetic_trace.jsonl"), limit=300).requests
    seen: set[tuple[int, ...]] = set()
    shared = 0
    for request in requests:  # tokens of full 512-token chunks whose whole prefix appeared before
        ids = request.prefix_hash_ids or ()
        for i in range(len(ids)):
            if ids[: i + 1] not in seen:
                break
            shared += min(512, request.prompt_len - 512 * i) if request.prompt_len >= 512 * (i + 1) else 0
        seen.update(ids[: i + 1] for i in range(len(ids)))
    big = sum(r.total_len for r in requests) + 16
    result = simulate(requests, PagedCache(big, enable_prefix_caching=True))
    queried = result.counters["prompt_tokens_queried"]
    assert result.counters["prompt_hit_tokens"] >= shared > 0
    assert result.counters["prompt_hit_tokens"] - shared < 0.01 * queried  # partial chunks hit a little more


# --- the time model ------------------------------------------------------------------------------


def test_arrivals_join_at_the_first_step_starting_after_them() -> None:
    requests = _small(80, seed=4)
    result = simulate(requests, PagedCache(20_000), SimConfig(step_time=StepTime(0.03)))
    times = result.series.time
    for request, step in zip(requests, result.arrival_step, strict=True):
        assert times[step] >= request.arrival_time
        assert step == 0 or times[step - 1] < request.arrival_time


def test_idle_time_is_skipped_not_simulated() -> None:
    requests = [Request(0, 0.0, 10, 5), Request(1, 1000.0, 10, 5)]
    result = simulate(requests, PagedCache(1000), SimConfig(step_time=StepTime(0.1)))
    assert len(result.series) == 10
    assert result.series.time[5] == 1000.0
    assert result.latency_s == pytest.approx([0.5, 0.5])


def test_step_time_model_sees_batch_prefill_and_context() -> None:
    seen: list[tuple[int, int, int]] = []

    def model(batch: int, prefill: int, context: int) -> float:
        seen.append((batch, prefill, context))
        return 0.01 + 0.001 * batch

    requests = _small(40, seed=8)
    result = simulate(requests, PagedCache(30_000), SimConfig(step_time=model))
    assert [b for b, _, _ in seen] == list(result.series.batch)
    assert [c for _, _, c in seen] == list(result.series.tokens)  # no sharing: context = tokens held
    assert sum(p for _, p, _ in seen) == sum(r.prompt_len for r in requests)  # no preemption here
    assert result.series.time[1] == pytest.approx(0.01 + 0.001 * result.series.batch[0])


def test_max_time_stops_early_and_reports_unfinished() -> None:
    requests = _small(100, seed=9)
    result = simulate(requests, NaiveCache(5000, 1000), SimConfig(max_time=2.0))
    assert result.series.time[-1] < 2.0 <= result.end_time
    assert 0 < result.finished < len(requests)
    summary = result.summary(window=(0.5, 2.0))
    assert summary["requests_finished"] == result.finished
    assert summary["steps"] == sum(1 for t in result.series.time if 0.5 <= t < 2.0)


def test_bad_configurations_are_refused() -> None:
    with pytest.raises(SimulationConfigError, match="not both"):
        SimConfig(n=2, beam_width=2)
    with pytest.raises(SimulationConfigError, match="base_s"):
        StepTime(0.0)
    with pytest.raises(SimulationConfigError, match="empty"):
        simulate([], PagedCache(1000))
    with pytest.raises(SimulationConfigError, match="sorted"):
        simulate([Request(0, 5.0, 1, 1), Request(1, 1.0, 1, 1)], PagedCache(1000))
    with pytest.raises(SimulationConfigError, match="max_num_seqs=2 cannot run"):
        SimConfig(n=4, max_num_seqs=2)
    with pytest.raises(SimulationConfigError, match="unknown cache 'orca-min'"):
        standard_caches(1000, 100, kinds=["orca-min"])


def test_on_step_sees_every_step_with_the_running_requests() -> None:
    from pagedkv.simulator.loop import StepView

    requests = synthetic_workload(20, rate=5.0, seed=1)
    seen: list[tuple[int, int, int]] = []

    def observe(view: StepView) -> None:
        seen.append((view.step, len(view.running), len(view.waiting)))
        for gid in view.running:
            assert len(view.cache.sequences(gid)) == 1  # type: ignore[attr-defined]

    result = simulate(requests, PagedCache(20_000, 16), on_step=observe)
    assert [s for s, _, _ in seen] == list(range(len(result.series)))
    assert [b for _, b, _ in seen] == list(result.series.batch)
    assert [q for _, _, q in seen] == list(result.series.queue)


def test_a_run_without_its_series_summarizes_exactly_as_one_with_them() -> None:
    """The lean run (streamed totals, the window's totals given up front) and the full series agree on
    every number of the summary, over the whole run and over a window."""
    requests = _small(300)
    window = (2.0, 6.0)
    lean = compare(requests, standard_caches(16_000, 1000, watermark=0.01), keep_series=False, window=window)
    full = compare(requests, standard_caches(16_000, 1000, watermark=0.01), keep_series=True)
    for name, result in lean.items():
        assert result.series is None and full[name].series is not None, name
        assert result.summary() == full[name].summary(), name
        windowed = result.summary(window)
        assert windowed == full[name].summary(window), name
        assert windowed["held_pct_mean"] != result.summary()["held_pct_mean"], name  # the window matters
