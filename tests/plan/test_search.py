"""The rate search against known answers: a sharp knee, noise, nothing sustained, everything sustained."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pagedkv.plan.search import CEILING, FLOOR, RateSearch, Status
from pagedkv.plan.slo import Slo
from pagedkv.plan.verdict import SloCheck, Verdict


def verdict(sustains: bool) -> Verdict:
    """A verdict that says `sustains` (an SLO met or missed), without simulating."""
    slo = Slo("p99", "ttft", 1.0)
    value = 0.5 if sustains else 2.0
    return Verdict((SloCheck(slo, value, value, value),), 0.0, True)


def drive(search: RateSearch, sustains) -> list[float]:  # type: ignore[no-untyped-def]
    tried = []
    while (rate := search.next_rate()) is not None:
        tried.append(rate)
        search.record(rate, verdict(sustains(rate)))
        assert len(tried) < 50, "the search does not stop"
    return tried


@given(
    knee=st.floats(min_value=0.05, max_value=500.0),
    start=st.floats(min_value=0.5, max_value=50.0),
    tolerance=st.sampled_from([0.01, 0.02, 0.05, 0.1]),
)
@settings(max_examples=300, deadline=None)
def test_a_sharp_knee_is_bracketed_within_the_tolerance(knee: float, start: float, tolerance: float) -> None:
    search = RateSearch(start, tolerance)
    tried = drive(search, lambda rate: rate <= knee)
    if search.status is Status.FOUND:
        assert search.lo is not None and search.hi is not None
        assert search.lo <= knee < search.hi
        assert search.hi / search.lo <= 1 + tolerance
        # bracketing by factors of 2 (at most 6 halvings or 4 doublings), then bisection of a factor 2
        assert len(tried) <= 6 + math.ceil(math.log2(math.log(2) / math.log(1 + tolerance))) + 1
    elif search.status is Status.NONE:
        assert knee < start * FLOOR and min(tried) == pytest.approx(start * FLOOR)
    else:
        assert search.status is Status.ABOVE
        assert knee >= start * CEILING and max(tried) == pytest.approx(start * CEILING)


def test_the_sequence_of_rates_for_a_knee_at_7() -> None:
    search = RateSearch(10.0, 0.02)
    tried = drive(search, lambda rate: rate <= 7.0)
    assert tried[:2] == [10.0, 5.0]  # 10 fails: halve; 5 sustains: bracket [5, 10]
    assert tried[2] == pytest.approx(math.sqrt(50))  # then geometric midpoints
    assert search.lo == pytest.approx(6.9, abs=0.1) and search.hi is not None and search.hi > 7.0


def test_noise_never_puts_a_sustained_rate_above_a_failed_one() -> None:
    rng = random.Random(3)
    for _ in range(200):
        knee = rng.uniform(1, 20)
        search = RateSearch(rng.uniform(1, 20), 0.02)
        drive(search, lambda rate, knee=knee: rate <= knee * rng.uniform(0.9, 1.1))  # noisy verdicts
        sustained = [rate for rate, v in search.verdicts.items() if v.sustains]
        failed = [rate for rate, v in search.verdicts.items() if not v.sustains]
        assert not sustained or not failed or max(sustained) < min(failed)
        assert search.lo == (max(sustained) if sustained else None)


def test_nothing_sustained_stops_at_the_floor_and_everything_at_the_ceiling() -> None:
    none = RateSearch(8.0, 0.02)
    assert drive(none, lambda rate: False) == [8.0, 4.0, 2.0, 1.0, 0.5, 0.25]
    assert none.status is Status.NONE and none.lo is None
    above = RateSearch(8.0, 0.02)
    assert drive(above, lambda rate: True) == [8.0, 16.0, 32.0, 64.0]
    assert above.status is Status.ABOVE and above.hi is None and above.lo == 64.0


def test_a_rate_outside_the_bracket_is_refused() -> None:
    search = RateSearch(10.0, 0.02)
    search.record(10.0, verdict(False))
    search.record(5.0, verdict(True))
    with pytest.raises(ValueError, match="outside the bracket"):
        search.record(12.0, verdict(True))
    with pytest.raises(ValueError, match="outside the bracket"):
        search.record(4.0, verdict(False))
    with pytest.raises(ValueError, match="start rate"):
        RateSearch(0.0, 0.02)
    with pytest.raises(ValueError, match="tolerance"):
        RateSearch(1.0, 1.5)
