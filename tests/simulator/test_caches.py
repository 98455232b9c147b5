"""The caches under the loop: the waste breakdown, the Orca policies, equal memory, impossible sizes."""

from __future__ import annotations

import pytest

from pagedkv.simulator import (
    NaiveCache,
    OrcaCache,
    PagedCache,
    Request,
    SimConfig,
    SimulationConfigError,
    compare,
    simulate,
    standard_caches,
    synthetic_workload,
)
from pagedkv.simulator.orca import next_power_of_two
from pagedkv.simulator.paged_counts import CountingPagedCache


@pytest.fixture(scope="module")
def workload() -> list[Request]:
    return synthetic_workload(200, rate=20.0, prompt_range=(50, 900), output_range=(10, 300), seed=3)


@pytest.fixture(scope="module")
def all_caches(workload: list[Request]) -> dict:
    return compare(workload, standard_caches(24_000, 1200, watermark=0.01), SimConfig(check_invariants=True))


def _expected_breakdown(result, cache, lengths_per_step):  # type: ignore[no-untyped-def]
    """Reservation, internal fragmentation and padding of every step, from the running lengths alone."""
    expected = []
    for running in lengths_per_step:
        reservation = internal = padding = 0
        for request, length, num_seqs in running:
            final = request.total_len
            if isinstance(cache, (PagedCache, CountingPagedCache)):
                size = cache.block_size
                last_block = -(-length // size) == -(-final // size)
                slack = -(-final // size) * size - final if last_block else 0
                internal += num_seqs * slack
                reservation += num_seqs * (-(-length // size) * size - length - slack)
            else:
                claimed, chunk = cache.claimed_slots(request), cache.chunk_slots(request)
                internal += num_seqs * (claimed - final)
                padding += num_seqs * (chunk - claimed)
                reservation += num_seqs * (final - length)
        expected.append((reservation, internal, padding))
    return expected


@pytest.mark.parametrize("kind", ["naive", "orca-max", "orca-pow2", "orca-oracle", "paged", "paged+tables"])
def test_breakdown_matches_what_the_running_lengths_imply(workload: list[Request], kind: str) -> None:
    """Reservation, internal fragmentation and padding recomputed from the lengths an observer sees
    (not from the cache's counters); token states are checked by the test below."""
    tables = kind.endswith("+tables")
    (cache,) = standard_caches(
        24_000, 1200, kinds=[kind.removesuffix("+tables")], watermark=0.01, block_tables=tables
    )
    assert isinstance(cache, PagedCache) == tables
    lengths: list[list[tuple[Request, int, int]]] = []
    observe = lambda view: lengths.append(  # noqa: E731
        [(g.request, g.length(view.tick), g.num_seqs) for g in view.running.values()]
    )
    result = simulate(workload, cache, SimConfig(check_invariants=True), on_step=observe)
    series = result.series
    assert series is not None
    got = [
        (h - p - t - i, i, p)
        for h, p, t, i in zip(series.held, series.padding, series.tokens, series.internal, strict=True)
    ]
    assert got == _expected_breakdown(result, cache, lengths)
    if kind != "orca-oracle":
        assert sum(series.internal) > 0  # the comparison covers internal fragmentation


def test_free_memory_is_external_only_while_requests_wait() -> None:
    idle = [Request(i, 10.0 * i, prompt_len=100, output_len=20) for i in range(5)]  # one at a time
    result = simulate(idle, PagedCache(16_000, 16))
    summary = result.summary()
    assert summary["external_pct_mean"] == 0.0
    free = sum(16_000 - held for held in result.series.held)
    assert summary["free_pct_mean"] == pytest.approx(100.0 * free / (16_000 * len(result.series)))
    loaded = synthetic_workload(120, rate=50.0, prompt_range=(300, 900), output_range=(50, 200), seed=1)
    busy = simulate(loaded, NaiveCache(16_000, 1100))
    waiting_steps = [i for i, q in enumerate(busy.series.queue) if q]
    assert waiting_steps  # memory is the bottleneck: free slots while requests wait are external
    external = sum(16_000 - busy.series.held[i] for i in waiting_steps)
    assert busy.summary()["external_pct_mean"] == pytest.approx(
        100.0 * external / (16_000 * len(busy.series))
    )


def test_orca_policies_rank_as_in_the_paper(all_caches: dict) -> None:
    s = {name: result.summary() for name, result in all_caches.items()}
    assert s["orca-oracle"]["internal_pct_mean"] == 0.0  # reserves exactly prompt + output
    assert s["orca-max"]["internal_pct_mean"] > s["orca-pow2"]["internal_pct_mean"] > 0.0
    token_states = [
        s[name]["token_states_pct_mean"] for name in ("orca-max", "orca-pow2", "orca-oracle", "paged")
    ]
    assert token_states == sorted(token_states)  # less over-reservation, more tokens in memory
    assert s["orca-oracle"]["external_pct_mean"] > 5.0  # buddy rounding and holes are real


def test_token_states_equal_the_lengths_of_the_running_sequences(workload: list[Request]) -> None:
    """Rebuild every step's running lengths from the per-request steps and compare with `tokens`."""
    result = simulate(workload, NaiveCache(24_000, 1200))
    tokens = [0] * len(result.series)
    for request, admit, finish in zip(workload, result.first_admit_step, result.finish_step, strict=True):
        for step in range(admit, finish + 1):
            tokens[step] += request.prompt_len + 1 + step - admit
    assert list(result.series.tokens) == tokens


def test_orca_reservations() -> None:
    request = Request(0, 0.0, prompt_len=100, output_len=37)
    assert next_power_of_two(37) == 64 and next_power_of_two(64) == 64 and next_power_of_two(1) == 1
    claims = {p: OrcaCache(4096, 2048, p).claimed_slots(request) for p in ("max", "pow2", "oracle")}
    assert claims == {"max": 2048, "pow2": 164, "oracle": 137}
    oracle = OrcaCache(4096, 2048, "oracle")
    assert oracle.chunk_slots(request) == 256  # 137 slots -> 9 blocks of 16 -> a buddy block of 16
    capped = Request(1, 0.0, prompt_len=2000, output_len=40)
    assert OrcaCache(4096, 2048, "pow2").claimed_slots(capped) == 2048  # min(prompt + 64, max_seq_len)


def test_naive_rows_are_fixed_size_and_the_arena_admits_at_most_its_rows() -> None:
    cache = NaiveCache(10_000, 3000)
    assert cache.num_rows == 3 and "1,000 slots left over" in cache.describe()
    requests = [Request(i, 0.0, prompt_len=10, output_len=5) for i in range(5)]
    result = simulate(requests, cache)
    assert max(result.series.batch) == 3
    assert result.series.held[0] == 3 * 3000
    assert result.finished == 5


def test_compare_requires_equal_memory() -> None:
    with pytest.raises(SimulationConfigError, match="equal KV slots"):
        compare([Request(0, 0.0, 5, 5)], [NaiveCache(1000, 100), PagedCache(2000)])


def test_pool_smaller_than_one_request_is_refused_up_front() -> None:
    request = Request(0, 0.0, prompt_len=300, output_len=100)
    with pytest.raises(SimulationConfigError, match=r"needs 25 blocks of 16 but the paged pool has 20"):
        simulate([request], PagedCache(320))
    with pytest.raises(SimulationConfigError, match="smaller than one naive row"):
        NaiveCache(100, 400)
    with pytest.raises(SimulationConfigError, match="a naive row holds max_seq_len=300"):
        simulate([request], NaiveCache(3000, 300))
    with pytest.raises(SimulationConfigError, match="do not fit"):
        simulate(
            [request], OrcaCache(500, 400, "oracle")
        )  # 25 blocks -> a 32-block chunk; regions 16+8+4+2+1
    with pytest.raises(SimulationConfigError, match="already run"):
        cache = PagedCache(10_000)
        simulate([request], cache)
        simulate([request], cache)


def test_watermark_counts_against_the_pool() -> None:
    request = Request(0, 0.0, prompt_len=300, output_len=20)  # 20 blocks of 16
    simulate([request], PagedCache(20 * 16))
    with pytest.raises(SimulationConfigError, match="usable below the watermark"):
        simulate([request], PagedCache(20 * 16, watermark=0.1))
