"""Service-level objectives: ``--slo p99:ttft=2s`` parsed into a bound on one statistic of one latency.

Invariant: an `Slo` that exists is valid (a known latency, a percentile strictly between 0 and 100 or the
mean, a finite bound > 0 in seconds), and `parse_slo` refuses anything else with one line that starts
with the flag and the text as typed (``--slo p99:ttft=2: give a unit ...``), so a typo never costs a
search. A latency is one of the simulator's per-request latencies (`pagedkv.simulator.metrics.LATENCIES`):
``ttft`` (arrival to first token), ``tpot`` (time per output token after the first), ``e2e`` (arrival
to last token) and ``normalized`` (end to end / output tokens, the PagedAttention paper's metric).

Why any percentile and not just p50/p90/p99: the planner computes statistics from the per-request
latencies themselves, so ``p95`` or ``p99.9`` cost nothing more than ``p99`` -- except requests: a
percentile is only as stable as the number of requests beyond it (`required_requests`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pagedkv.errors import UsageError
from pagedkv.simulator.metrics import LATENCIES, percentile

METRIC_LABELS = {"ttft": "TTFT", "tpot": "TPOT", "e2e": "e2e latency", "normalized": "normalized latency"}
UNITS = {"s": 1.0, "ms": 1e-3}
TAIL_REQUESTS = 20
"""Requests a percentile needs beyond it: with n(1 - q) >= 20 the sample p-quantile's 95 % interval spans
about q +- 2 sqrt(q (1 - q) / n) (p98.6-p99.4 for p99 over 2,000 requests), so seeds and rates are
compared on the same tail, not on a handful of outliers."""
MEAN_REQUESTS = 100  # the mean of a latency needs no tail, but a few lifetimes' worth of requests

_SPEC = re.compile(r"^(?P<stat>[^:=]+):(?P<metric>[^:=]+)=(?P<value>[0-9.eE+-]+)(?P<unit>[a-zA-Z]*)$")


@dataclass(frozen=True, slots=True)
class Slo:
    """``statistic`` of ``metric`` over the measured requests must be at most ``bound_s`` seconds.

    ``statistic`` is ``"mean"`` or a percentile written ``"p99"``, ``"p99.9"``, ``"p50"``.
    """

    statistic: str
    metric: str
    bound_s: float

    def __post_init__(self) -> None:
        if self.metric not in LATENCIES:
            raise UsageError(f"unknown latency {self.metric!r}; choose from {', '.join(LATENCIES)}")
        if self.statistic != "mean":
            _quantile(self.statistic)
        if not (math.isfinite(self.bound_s) and self.bound_s > 0):
            raise UsageError(f"bound {self.bound_s!r} s must be a finite number of seconds > 0")

    @property
    def name(self) -> str:
        """``p99_ttft_s``: the key of this statistic in tables, CSV columns and JSON."""
        return f"{self.statistic.replace('.', '_')}_{self.metric}_s"

    def describe(self) -> str:
        """``p99 TTFT <= 2 s``."""
        return f"{self.statistic} {METRIC_LABELS[self.metric]} <= {format_seconds(self.bound_s)}"

    def value(self, latencies: Sequence[float]) -> float:
        """This statistic of `latencies` (seconds; NaN when there are none)."""
        return statistic(latencies, self.statistic)

    def met(self, value: float) -> bool:
        return value <= self.bound_s

    @property
    def required_requests(self) -> int:
        """Measured requests (all seeds together) for this statistic to be stable (`TAIL_REQUESTS`)."""
        if self.statistic == "mean":
            return MEAN_REQUESTS
        q = _quantile(self.statistic)
        return math.ceil(round(TAIL_REQUESTS / min(q, 1.0 - q), 6))


def parse_slo(text: str, flag: str = "--slo") -> Slo:
    """``STAT:METRIC=VALUE UNIT`` (``p99:ttft=2s``, ``mean:normalized=1s``, ``p90:tpot=100ms``)."""
    spec = text.strip().replace(" ", "")
    match = _SPEC.match(spec)
    if match is None:
        raise UsageError(
            f"{flag} {text}: expected STAT:METRIC=VALUE with a unit, e.g. {flag} p99:ttft=2s or "
            f"{flag} p90:tpot=100ms (STAT: mean or pNN; METRIC: {', '.join(LATENCIES)})"
        )
    stat, metric = match["stat"].lower(), match["metric"].lower()
    if stat != "mean" and not re.fullmatch(r"p\d+(\.\d+)?", stat):
        raise UsageError(
            f"{flag} {text}: statistic {match['stat']!r} is not mean or a percentile such as p99"
        )
    if metric not in LATENCIES:
        raise UsageError(
            f"{flag} {text}: unknown latency {match['metric']!r}; choose from {', '.join(LATENCIES)}"
        )
    unit = match["unit"].lower()
    if not unit:
        raise UsageError(f"{flag} {text}: give a unit, s or ms (e.g. {match['value']}s)")
    if unit not in UNITS:
        raise UsageError(f"{flag} {text}: unknown unit {match['unit']!r}; use s or ms")
    try:
        value = float(match["value"])
    except ValueError:
        raise UsageError(f"{flag} {text}: {match['value']!r} is not a number") from None
    try:
        return Slo(stat, metric, value * UNITS[unit])
    except UsageError as exc:
        raise UsageError(f"{flag} {text}: {exc}") from None


def parse_slos(texts: Iterable[str], flag: str = "--slo") -> tuple[Slo, ...]:
    """Every ``--slo``, each (statistic, latency) at most once."""
    slos: list[Slo] = []
    for text in texts:
        slo = parse_slo(text, flag)
        if any((s.statistic, s.metric) == (slo.statistic, slo.metric) for s in slos):
            raise UsageError(f"{flag} {text}: {slo.statistic} {slo.metric} has a bound already; give one")
        slos.append(slo)
    return tuple(slos)


def statistic(values: Sequence[float], stat: str) -> float:
    """``mean`` or the percentile ``pNN`` of `values`, interpolating between ranks (NaN if empty)."""
    if not values:
        return math.nan
    if stat == "mean":
        return math.fsum(values) / len(values)
    return percentile(sorted(values), 100.0 * _quantile(stat))


def format_seconds(seconds: float) -> str:
    """``2 s``, ``100 ms``, ``1.5 ms``: the unit a person would write."""
    if seconds >= 1.0:
        return f"{seconds:.3g} s"
    return f"{seconds * 1e3:.3g} ms"


def _quantile(stat: str) -> float:
    match = re.fullmatch(r"p(\d+(?:\.\d+)?)", stat)
    value = float(match[1]) if match else math.nan
    if not 0.0 < value < 100.0:
        raise UsageError(f"statistic {stat!r}: a percentile must be strictly between p0 and p100, e.g. p99")
    return value / 100.0
