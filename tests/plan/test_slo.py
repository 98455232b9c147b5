"""The SLO parser: what it accepts, and the one-line error (naming --slo and the text) for everything else."""

from __future__ import annotations

import math

import pytest

from pagedkv.errors import UsageError
from pagedkv.plan.slo import Slo, format_seconds, parse_slo, parse_slos, statistic


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("p99:ttft=2s", Slo("p99", "ttft", 2.0)),
        ("p99:tpot=100ms", Slo("p99", "tpot", 0.1)),
        ("mean:normalized=1s", Slo("mean", "normalized", 1.0)),
        ("p50:e2e=1.5s", Slo("p50", "e2e", 1.5)),
        ("P99.9:TTFT=250MS", Slo("p99.9", "ttft", 0.25)),
        (" p90 : tpot = 40ms ", Slo("p90", "tpot", 0.04)),
    ],
)
def test_accepted_forms(text: str, expected: Slo) -> None:
    slo = parse_slo(text)
    assert slo.statistic == expected.statistic and slo.metric == expected.metric
    assert slo.bound_s == pytest.approx(expected.bound_s)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("p99:ttft=2", "give a unit, s or ms (e.g. 2s)"),
        ("p99:ttft=2min", "unknown unit 'min'; use s or ms"),
        ("p99:latency=2s", "unknown latency 'latency'; choose from ttft, tpot, e2e, normalized"),
        ("avg:ttft=2s", "statistic 'avg' is not mean or a percentile such as p99"),
        ("p100:ttft=2s", "a percentile must be strictly between p0 and p100"),
        ("p0:ttft=2s", "a percentile must be strictly between p0 and p100"),
        ("p99:ttft=0s", "must be a finite number of seconds > 0"),
        ("p99:ttft=-1s", "must be a finite number of seconds > 0"),
        ("p99:ttft=1e999s", "must be a finite number of seconds > 0"),
        ("p99:ttft=1..2s", "'1..2' is not a number"),
        ("ttft=2s", "expected STAT:METRIC=VALUE with a unit"),
        ("p99:ttft", "expected STAT:METRIC=VALUE with a unit"),
        ("p99:ttft=", "expected STAT:METRIC=VALUE with a unit"),
        ("", "expected STAT:METRIC=VALUE with a unit"),
    ],
)
def test_every_mistake_is_one_line_naming_the_flag_and_the_text(text: str, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_slo(text)
    message = str(caught.value)
    assert message.startswith(f"--slo {text}: ")
    assert says in message
    assert "\n" not in message


def test_a_statistic_of_a_latency_is_bounded_once() -> None:
    assert len(parse_slos(["p99:ttft=2s", "p50:ttft=1s", "p99:tpot=50ms"])) == 3
    with pytest.raises(UsageError, match=r"^--slo p99:ttft=3s: p99 ttft has a bound already"):
        parse_slos(["p99:ttft=2s", "p99:ttft=3s"])


def test_statistics_and_the_requests_each_needs() -> None:
    values = [float(v) for v in range(1, 101)]  # 1 .. 100
    assert statistic(values, "mean") == 50.5
    assert statistic(values, "p50") == 50.5
    assert statistic(values, "p99") == pytest.approx(99.01)
    assert math.isnan(statistic([], "p99"))
    # 20 requests beyond the percentile (either tail), 100 for a mean
    assert Slo("p99", "ttft", 1).required_requests == 2000
    assert Slo("p99.9", "ttft", 1).required_requests == 20000
    assert Slo("p90", "ttft", 1).required_requests == 200
    assert Slo("p50", "ttft", 1).required_requests == 40
    assert Slo("mean", "ttft", 1).required_requests == 100


def test_names_and_descriptions() -> None:
    slo = parse_slo("p99.9:tpot=100ms")
    assert slo.name == "p99_9_tpot_s"
    assert slo.describe() == "p99.9 TPOT <= 100 ms"
    assert format_seconds(2.0) == "2 s" and format_seconds(0.0153) == "15.3 ms"
