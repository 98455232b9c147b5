"""The synthetic workload and Poisson re-timing: determinism, ranges, arrival statistics, validation."""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics

import pytest

from pagedkv.errors import InvalidArgument, PagedKVError
from pagedkv.simulator.workload import (
    DEFAULT_RATE,
    Request,
    synthetic_workload,
    with_poisson_arrivals,
)


def _gaps(requests: list[Request]) -> list[float]:
    return [b.arrival_time - a.arrival_time for a, b in itertools.pairwise(requests)]


def test_default_workload_shape() -> None:
    requests = synthetic_workload()

    assert len(requests) == 1000
    assert [r.request_id for r in requests] == list(range(1000))
    assert requests[0].arrival_time == 0.0
    assert all(gap >= 0 for gap in _gaps(requests))
    assert all(200 <= r.prompt_len <= 4000 and 50 <= r.output_len <= 500 for r in requests)
    assert all(r.prefix_hash_ids is None for r in requests)
    # Uniform lengths: the means sit near the middle of each range (2100 and 275).
    assert statistics.fmean(r.prompt_len for r in requests) == pytest.approx(2100, abs=100)
    assert statistics.fmean(r.output_len for r in requests) == pytest.approx(275, abs=15)
    assert requests[-1].arrival_time == pytest.approx(999 / DEFAULT_RATE, rel=0.1)


def test_same_seed_same_requests_other_seed_other_requests() -> None:
    assert synthetic_workload(seed=7) == synthetic_workload(seed=7)
    assert synthetic_workload(seed=7) != synthetic_workload(seed=8)


def test_ranges_are_closed_at_both_ends() -> None:
    requests = synthetic_workload(2000, prompt_range=(1, 3), output_range=(5, 5))
    assert {r.prompt_len for r in requests} == {1, 2, 3}
    assert {r.output_len for r in requests} == {5}


@pytest.mark.parametrize("rate", [0.5, 4.0, 50.0])
def test_arrivals_are_poisson_at_the_requested_rate(rate: float) -> None:
    gaps = _gaps(synthetic_workload(20_001, rate=rate, seed=3))
    # Exponential gaps: mean 1/rate, and standard deviation equal to the mean (evenly spaced or
    # uniformly jittered arrivals would have the right mean but a much smaller spread).
    assert statistics.fmean(gaps) == pytest.approx(1 / rate, rel=0.03)
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.05)


def test_with_poisson_arrivals_retimes_without_touching_lengths() -> None:
    untimed = [
        Request(
            request_id=10 + i, arrival_time=0.0, prompt_len=i + 1, output_len=2 * i + 1, prefix_hash_ids=(i,)
        )
        for i in range(5000)
    ]

    timed = with_poisson_arrivals(untimed, rate=8.0, seed=1)

    assert [(r.prompt_len, r.output_len, r.prefix_hash_ids) for r in timed] == [
        (r.prompt_len, r.output_len, r.prefix_hash_ids) for r in untimed
    ]
    assert [r.request_id for r in timed] == list(range(5000))
    assert timed[0].arrival_time == 0.0
    assert statistics.fmean(_gaps(timed)) == pytest.approx(1 / 8.0, rel=0.05)
    assert min(_gaps(timed)) > 0
    assert with_poisson_arrivals(untimed, rate=8.0, seed=1) == timed
    assert with_poisson_arrivals(untimed, rate=8.0, seed=2) != timed


def test_with_poisson_arrivals_of_nothing_is_nothing() -> None:
    assert with_poisson_arrivals([], rate=1.0) == []


@pytest.mark.parametrize("rate", [0.0, -1.0, math.inf, math.nan])
def test_rate_must_be_positive_and_finite(rate: float) -> None:
    with pytest.raises(InvalidArgument, match="rate="):
        synthetic_workload(10, rate=rate)
    with pytest.raises(InvalidArgument, match="rate="):
        with_poisson_arrivals(synthetic_workload(3), rate=rate)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"num_requests": 0}, "num_requests=0"),
        ({"prompt_range": (0, 10)}, "prompt_range=(0, 10)"),
        ({"output_range": (9, 8)}, "output_range=(9, 8)"),
    ],
)
def test_impossible_workloads_are_rejected(options: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        synthetic_workload(**options)
    assert fragment in str(caught.value)
    assert isinstance(caught.value, PagedKVError)


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt_len": 0},
        {"output_len": 0},
        {"output_len": -3},
        {"arrival_time": -0.5},
        {"arrival_time": math.nan},
        {"prefix_block_tokens": 0},
    ],
)
def test_request_rejects_impossible_fields(fields: dict[str, object]) -> None:
    values = {"request_id": 4, "arrival_time": 1.0, "prompt_len": 10, "output_len": 5, **fields}
    with pytest.raises(InvalidArgument, match="request 4"):
        Request(**values)


def test_request_is_frozen_and_knows_its_total_length() -> None:
    request = Request(request_id=0, arrival_time=0.0, prompt_len=30, output_len=12)
    assert request.total_len == 42
    assert request.prefix_block_tokens == 512
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.prompt_len = 1  # type: ignore[misc]


def test_with_poisson_arrivals_repeats_the_lengths_to_the_requested_count() -> None:
    from pagedkv.simulator.workload import Request as Req

    lengths = [Req(7, 0.0, 10, 3), Req(8, 0.0, 20, 4, (5, 6), 8)]
    timed = with_poisson_arrivals(lengths, 2.0, seed=3, num_requests=5)
    assert [r.request_id for r in timed] == [0, 1, 2, 3, 4]
    assert [(r.prompt_len, r.output_len) for r in timed] == [(10, 3), (20, 4), (10, 3), (20, 4), (10, 3)]
    assert timed[3].prefix_hash_ids == (5, 6) and timed[3].prefix_block_tokens == 8
    assert [r.arrival_time for r in timed[:2]] == [
        r.arrival_time for r in with_poisson_arrivals(lengths, 2.0, 3)
    ]
