"""Whether a configuration *sustains* a request rate: the definition every search and report uses.

A configuration sustains a rate when, over the measured requests of every seed's stream at that rate
(`pagedkv.plan.measure`: the middle of each stream, after a warm-up, before the drain) pooled together:

1. every SLO holds: its statistic (a percentile or the mean) of the pooled latencies is within its
   bound -- pooled, so a p99 over three seeds of 1,600 measured requests each rests on 48 requests
   beyond it, not 16;
2. the deployment keeps up: the queue of requests without a first token grew, over the measured
   arrivals, by at most `KEEP_UP_SHARE` (2 %) of them, pooled over the seeds. A deployment that keeps
   up holds its queue near empty (a higher load runs as a larger batch); one that cannot grows it by
   the unserved share of the load, 1 - (service rate / arrival rate), which this measures to about a
   percent (`pagedkv.plan.measure`), so 2 % flags overloads of 2 % and more, whatever the SLOs. A
   caller reproducing a latency-only criterion (the paper's Fig. 12) turns this check off.

Invariant: a `Verdict` keeps the pooled value of every SLO and each seed's own value (the spread), so
every report can show what a decision rested on and how much the seeds disagreed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean

from pagedkv.plan.measure import PointResult
from pagedkv.plan.slo import METRIC_LABELS, Slo, format_seconds, statistic
from pagedkv.simulator.metrics import LATENCIES

KEEP_UP_SHARE = 0.02
STATISTICS = ("p50", "p90", "p99", "mean")  # the latency statistics every report shows
SEED_MEANS = ("batch_mean", "kv_usage_pct", "queue_mean", "completion_rate", "preemptions")  # PointResult's
POOLED_METRICS = (*(f"{name}_s_{stat}" for name in LATENCIES for stat in STATISTICS), *SEED_MEANS)
"""The keys of `pooled_metrics`, in its order."""


@dataclass(frozen=True, slots=True)
class SloCheck:
    """One SLO at one rate: the pooled statistic, the lowest and highest single seed's, and the outcome."""

    slo: Slo
    value: float
    low: float
    high: float

    @property
    def met(self) -> bool:
        return self.slo.met(self.value)

    def describe(self) -> str:
        """``p99 TTFT 3.1 s > 2 s``."""
        sign = "<=" if self.met else ">"
        label, bound = METRIC_LABELS[self.slo.metric], format_seconds(self.slo.bound_s)
        return f"{self.slo.statistic} {label} {format_seconds(self.value)} {sign} {bound}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the rate is sustained, with every check it rests on."""

    checks: tuple[SloCheck, ...]
    growth_share: float  # pooled queue growth / measured arrivals
    keep_up_required: bool

    @property
    def keeps_up(self) -> bool:
        return self.growth_share <= KEEP_UP_SHARE

    @property
    def sustains(self) -> bool:
        return all(check.met for check in self.checks) and (self.keeps_up or not self.keep_up_required)

    def failures(self) -> list[str]:
        """What did not hold, one phrase each (``p99 TTFT 3.1 s > 2 s``, ``queue grew by 12 % ...``)."""
        failed = [check.describe() for check in self.checks if not check.met]
        if self.keep_up_required and not self.keeps_up:
            failed.append(f"queue grew by {self.growth_share:.1%} of the arrivals (> {KEEP_UP_SHARE:.0%})")
        return failed


def judge(results: Sequence[PointResult], slos: Sequence[Slo], keep_up: bool = True) -> Verdict:
    """The verdict on one rate from its seeds' results (see the module docstring)."""
    if not results:
        raise ValueError("no result to judge")
    checks = []
    for slo in slos:
        per_seed = [slo.value(r.latencies[slo.metric]) for r in results]
        finite = [v for v in per_seed if not math.isnan(v)]
        pooled = slo.value([x for r in results for x in r.latencies[slo.metric]])
        checks.append(SloCheck(slo, pooled, min(finite, default=math.nan), max(finite, default=math.nan)))
    arrivals = sum(r.arrivals for r in results)
    growth = sum(r.queue_growth for r in results) / arrivals if arrivals else 0.0
    return Verdict(tuple(checks), growth, keep_up)


def pooled_metrics(results: Sequence[PointResult]) -> dict[str, float]:
    """Every latency statistic of `STATISTICS` over the pooled measured requests (``ttft_s_p99``, ...,
    the simulator's summary names), and the means over seeds of batch, KV usage, queue and completions."""
    metrics: dict[str, float] = {}
    for name in LATENCIES:
        values = [x for r in results for x in r.latencies[name]]
        for stat in STATISTICS:
            metrics[f"{name}_s_{stat}"] = statistic(values, stat)
    for name in SEED_MEANS:
        metrics[name] = fmean(getattr(r, name) for r in results)
    return metrics
