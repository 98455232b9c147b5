"""Each seed's own knee: the rate at which that seed's stream alone would stop sustaining.

The search decides on the seeds pooled, which is what makes a p99 stable; this module shows how far the
seeds disagree. For one seed and one criterion (an SLO's statistic over that seed's measured requests,
or its queue growth share against `KEEP_UP_SHARE`), the knee is where the values measured at the
rates tried first exceed the bound, interpolated linearly between the last rate within it and the
first rate beyond; a seed's knee is its earliest over all criteria. A seed within bounds at every
rate tried has its knee above them (``math.inf``), one beyond at the lowest has it below (``0.0``).

Invariant: only rates that were simulated are used, so a knee is as precise as the rates near it --
dense around the pooled answer, where the search bisected, and coarse far from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pagedkv.plan.measure import PointResult
from pagedkv.plan.slo import Slo
from pagedkv.plan.verdict import KEEP_UP_SHARE

Evaluations = Sequence[tuple[float, Sequence[PointResult]]]
"""Rates tried, increasing, each with its seeds' results."""


def seed_knees(evaluations: Evaluations, slos: Sequence[Slo], keep_up: bool = True) -> dict[int, float]:
    """Every seed's knee (requests/s; ``inf`` above every rate tried, ``0.0`` below the lowest)."""
    if not evaluations:
        return {}
    rates = [rate for rate, _ in evaluations]
    seeds = sorted({p.seed for _, results in evaluations for p in results})
    knees = {}
    for seed in seeds:
        per_rate = [next(p for p in results if p.seed == seed) for _, results in evaluations]
        curves = [([slo.value(p.latencies[slo.metric]) for p in per_rate], slo.bound_s) for slo in slos]
        if keep_up:
            curves.append(([p.growth_share for p in per_rate], KEEP_UP_SHARE))
        knees[seed] = min((crossing(rates, values, bound) for values, bound in curves), default=math.inf)
    return knees


def crossing(rates: Sequence[float], values: Sequence[float], bound: float) -> float:
    """Where `values` (measured at increasing `rates`) first exceed `bound`, interpolated linearly."""
    for i, value in enumerate(values):
        if value > bound:
            if i == 0:
                return 0.0
            low_rate, low_value = rates[i - 1], values[i - 1]
            share = (bound - low_value) / (value - low_value)
            return low_rate + share * (rates[i] - low_rate)
    return math.inf


def describe_knees(knees: Sequence[float], rates: Sequence[float]) -> str:
    """``14.2-15.9``: the lowest and the highest seed's knee; ``>R`` / ``<R`` beyond the rates tried."""
    if not knees:
        return "-"
    return "-".join(_shown(knee, rates) for knee in (min(knees), max(knees)))


def _shown(knee: float, rates: Sequence[float]) -> str:
    if math.isinf(knee):
        return f">{max(rates):.3g}"
    if knee == 0.0:
        return f"<{min(rates):.3g}"
    return f"{knee:.3g}"
