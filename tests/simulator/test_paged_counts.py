"""`CountingPagedCache` (block counts) against `PagedCache` (block tables in a `BlockManager`).

The counting cache exists for speed; these tests are its contract: on every workload where counts
decide the run (one sequence per request, no prefix caching) both give identical per-step series,
per-request results and counters — with preemption by recompute and by swap (and swap-pool
fallbacks), watermarks, token budgets with and without chunked prefill, and both schedulers.
"""

from __future__ import annotations

import pytest

from pagedkv.simulator import (
    PagedCache,
    Request,
    SimConfig,
    SimulationConfigError,
    StepTime,
    simulate,
    standard_caches,
    synthetic_workload,
)
from pagedkv.simulator.paged_counts import CountingPagedCache

CASES = [
    # (seed, kv_slots, block_size, paged options, config options)
    (1, 6_000, 16, {}, {}),
    (2, 5_000, 16, {"watermark": 0.05}, {}),
    (3, 4_000, 7, {}, {}),
    (4, 3_000, 1, {}, {}),
    (5, 6_000, 16, {"preemption": "swap"}, {}),
    (6, 6_000, 16, {"preemption": "swap", "swap_slots": 600}, {}),
    (7, 6_000, 16, {}, {"max_num_batched_tokens": 300, "max_num_seqs": 64}),
    (8, 5_000, 16, {"preemption": "swap"}, {"max_num_batched_tokens": 256, "max_num_seqs": 32}),
    (9, 6_000, 16, {}, {"max_num_batched_tokens": 1200, "max_num_seqs": 64, "enable_chunked_prefill": False}),
    (10, 6_000, 16, {}, {"max_num_batched_tokens": 1200, "max_num_seqs": 64, "scheduler": "v0"}),
    (
        11,
        5_000,
        32,
        {"preemption": "swap"},
        {"max_num_batched_tokens": 1200, "max_num_seqs": 64, "scheduler": "v0"},
    ),
    (12, 4_000, 16, {"watermark": 0.02}, {"max_num_seqs": 12}),
    # blocks of one token: every decoding sequence crosses every tick, so preemptions after the
    # crossings (V0's free block per sequence) swap out groups that already took this tick's block
    (
        13,
        3_000,
        1,
        {"preemption": "swap"},
        {"max_num_batched_tokens": 1200, "max_num_seqs": 64, "scheduler": "v0"},
    ),
]


@pytest.mark.parametrize(("seed", "kv_slots", "block_size", "paged", "config"), CASES)
def test_counting_equals_block_tables(
    seed: int, kv_slots: int, block_size: int, paged: dict, config: dict
) -> None:
    requests = synthetic_workload(150, rate=25.0, prompt_range=(20, 600), output_range=(5, 300), seed=seed)
    sim = SimConfig(step_time=StepTime(0.02, per_seq_s=1e-4), check_invariants=True, **config)
    exact = simulate(requests, PagedCache(kv_slots, block_size, **paged), sim)
    counted = simulate(requests, CountingPagedCache(kv_slots, block_size, **paged), sim)
    assert exact.series is not None and counted.series is not None
    for name in ("time", "batch", "queue", "held", "tokens", "internal", "padding", "saved"):
        assert list(getattr(counted.series, name)) == list(getattr(exact.series, name)), name
    assert counted.finish_step == exact.finish_step
    assert counted.preemptions == exact.preemptions
    assert list(counted.requests.first_token_time) == list(exact.requests.first_token_time)
    assert counted.counters == {**exact.counters, "cow_copies": 0}
    assert exact.counters["preemptions_recompute"] + exact.counters["swap_outs"] > 0  # preemption covered


def test_standard_caches_counts_only_where_counts_decide() -> None:
    def paged(**options: object) -> type:
        (cache,) = standard_caches(8_000, 1000, kinds=["paged"], **options)  # type: ignore[arg-type]
        return type(cache)

    assert paged() is CountingPagedCache
    assert paged(num_seqs=2) is PagedCache
    assert paged(enable_prefix_caching=True) is PagedCache
    assert paged(block_tables=True) is PagedCache


def test_counting_refuses_runs_with_several_sequences() -> None:
    requests = synthetic_workload(5, seed=1)
    with pytest.raises(SimulationConfigError, match="counts one sequence per request; use PagedCache"):
        simulate(requests, CountingPagedCache(100_000), SimConfig(n=2))


@pytest.mark.parametrize("cache_class", [PagedCache, CountingPagedCache])
def test_a_swapped_out_group_takes_its_blocks_from_before_the_step(cache_class: type) -> None:
    """V0, blocks of one token, 14 blocks: two prompts of 5 take 6 blocks each; in the first decode
    step both take their 7th block, none is left, so V0 swaps out the newest — with the 6 blocks it
    held before the step, not the block it took for a token it will not keep."""
    requests = [Request(0, 0.0, 5, 8), Request(1, 0.0, 5, 8)]
    result = simulate(
        requests,
        cache_class(14, 1, preemption="swap"),
        SimConfig(scheduler="v0", max_num_batched_tokens=200, max_num_seqs=8, check_invariants=True),
    )
    assert result.counters["swap_outs"] >= 1
    assert result.counters["swap_peak_blocks"] == 6
    assert list(result.series.held[:2]) == [12, 7]  # the first decode step ends with request 0 alone
