"""One point of a plan: the stream a seed gives at a rate, the measured requests, and what is measured."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from pagedkv.plan.point import PointTask, measured_range, run_point, stream
from pagedkv.simulator.workload import Request

FIXTURES = Path(__file__).resolve().parents[1] / "simulator" / "fixtures"
MD1 = (
    *("--prompt-range", "1", "1", "--output-range", "10", "10", "--step-time", "0.1"),
    *("--kv-slots", "1024", "--max-num-seqs", "1", "--caches", "paged"),
)


def pool(count: int, prefixes: bool = False) -> list[Request]:
    return [
        Request(i, 0.0, 10 + i, 1 + i % 7, prefix_hash_ids=(i,) if prefixes else None) for i in range(count)
    ]


def test_the_same_seed_at_another_rate_is_the_same_requests_with_scaled_arrivals() -> None:
    slow, fast = stream(pool(50), 2.0, 3, 40, False), stream(pool(50), 5.0, 3, 40, False)
    assert [(r.prompt_len, r.output_len) for r in slow] == [(r.prompt_len, r.output_len) for r in fast]
    assert all(s.arrival_time == pytest.approx(f.arrival_time * 2.5) for s, f in zip(slow, fast, strict=True))
    other = stream(pool(50), 2.0, 4, 40, False)
    assert [r.prompt_len for r in other] != [r.prompt_len for r in slow]


def test_a_trace_is_sampled_without_replacement_and_a_prefix_trace_kept_in_order() -> None:
    sampled = stream(pool(50), 1.0, 0, 50, False)
    assert sorted(r.prompt_len for r in sampled) == [10 + i for i in range(50)]  # every row once
    assert [r.prompt_len for r in sampled] != [10 + i for i in range(50)]  # in a seeded order
    assert len(stream(pool(50), 1.0, 0, 120, False)) == 120  # longer than the trace: sampled again
    window = [r.prompt_len - 10 for r in stream(pool(50, prefixes=True), 1.0, 0, 20, False)]
    assert all((b - a) % 50 == 1 for a, b in itertools.pairwise(window))  # consecutive rows
    assert [r.request_id for r in sampled] == list(range(50))


def test_saturation_puts_every_arrival_at_zero() -> None:
    assert {r.arrival_time for r in stream(pool(10), math.inf, 0, 10, False)} == {0.0}


def test_the_measured_requests_are_the_middle_eighty_percent() -> None:
    assert measured_range(100) == (10, 90)
    assert measured_range(10) == (1, 9)
    task = PointTask("md1", MD1, 0.4, 2, 100, True)
    result = run_point(task)
    requests = stream(pool(100), 0.4, 2, 100, True)  # the arrivals depend on the seed, rate and count only
    assert result.key == "md1" and result.rate == 0.4 and result.seed == 2
    assert result.arrivals == 80 and len(result.latencies["e2e"]) == 80
    assert result.window_s == (requests[10].arrival_time, requests[89].arrival_time)
    assert all(t >= 1.0 - 1e-9 for t in result.latencies["e2e"])  # ten 0.1-s steps each
    assert result.latencies["tpot"] == pytest.approx([0.1] * 80)


def test_the_queue_grows_by_the_unserved_share_of_the_load() -> None:
    # one server, 1 request/s of service: at 2 req/s half the load is left unserved
    overloaded = run_point(PointTask(0, MD1, 2.0, 0, 1000, True))
    assert overloaded.growth_share == pytest.approx(0.5, abs=0.03)
    assert overloaded.completion_rate == pytest.approx(1.0, rel=0.01)
    light = run_point(PointTask(0, MD1, 0.3, 0, 1000, True))
    assert abs(light.growth_share) < 0.01
    assert light.completion_rate == pytest.approx(0.3, rel=0.1)
