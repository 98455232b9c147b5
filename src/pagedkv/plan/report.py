"""What `pagedkv plan` prints and writes: the table on stdout, the JSON document and the CSV rows.

Invariant: the three show the same numbers from the same `ConfigurationResult`s -- the answer (the
highest sustained rate), what stopped the next rate up, and at the answer the pooled SLO statistics
with each seed's lowest and highest, the batch, the KV usage and the latency percentiles -- and the
JSON and the CSV add every rate the search tried, so a reader can redraw the curve or check a verdict.
Keys are the simulator's names (``ttft_s_p99``, ``batch_mean``) and the SLOs' (``p99_ttft_s``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from pagedkv.outputs import atomic_path
from pagedkv.plan.knees import describe_knees, seed_knees
from pagedkv.plan.measure import PointResult
from pagedkv.plan.run import ConfigurationResult, Plan
from pagedkv.plan.search import Status
from pagedkv.plan.slo import Slo, format_seconds, statistic
from pagedkv.plan.verdict import KEEP_UP_SHARE, POOLED_METRICS, STATISTICS, Verdict, pooled_metrics
from pagedkv.simulator.metrics import LATENCIES


def format_table(plan: Plan, results: Sequence[ConfigurationResult]) -> str:
    """Two tables: the answer for every configuration, then what it looks like at that rate."""
    answers = [
        [
            r.configuration.label,
            f"{plan.kv_slots(r.configuration.index):,}",
            _rate(r),
            _seeds_alone(plan, r),
            _throughput(r),
            _limited_by(r),
        ]
        for r in results
    ]
    headers = [
        "configuration",
        "KV slots",
        "max rate (req/s)",
        "seeds alone",
        "saturated",
        "what fails above it",
    ]
    lines = [tabulate(answers, headers=headers, tablefmt="simple", disable_numparse=True)]
    rows = [_at_max_row(plan, r) for r in results if r.max_rate is not None]
    if rows:
        slos = [f"{slo.statistic} {slo.metric}" for slo in plan.slos]
        headers = [
            "at the max rate",
            *slos,
            "batch",
            "KV used",
            "TTFT p50/p99",
            "TPOT p50/p99",
            "e2e p50/p99",
        ]
        lines += ["", tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)]
    lines.append(
        "(max rate: the seeds pooled; seeds alone: each seed's own knee, lowest-highest; saturated: "
        "requests/s completed with every request queued at once. At the max rate: SLO statistics pooled "
        "[lowest-highest seed], batch = sequences decoding a step, KV used = % of the KV cache held)"
    )
    return "\n".join(lines)


def to_json(plan: Plan, results: Sequence[ConfigurationResult], header: dict[str, Any]) -> dict[str, Any]:
    """The whole plan as JSON-ready data (NaN as null)."""
    document = {
        **header,
        "slos": [
            {"name": s.name, "statistic": s.statistic, "metric": s.metric, "bound_s": s.bound_s}
            for s in plan.slos
        ],
        "seeds": list(plan.seeds),
        "num_requests": plan.num_requests,
        "measured_requests": plan.measured_requests,
        "tolerance": plan.tolerance,
        "keep_up_share": KEEP_UP_SHARE,
        "configurations": [_configuration_json(plan, r) for r in results],
    }
    return _clean(document)


def csv_rows(plan: Plan, results: Sequence[ConfigurationResult]) -> list[dict[str, Any]]:
    """One row per configuration and rate tried, in configuration order then rate order."""
    rows = []
    for result in results:
        for rate, verdict, seeds in result.evaluations():
            row: dict[str, Any] = {"configuration": result.configuration.label}
            row.update(dict(result.configuration.values))
            row.update(
                {
                    "rate": rate,
                    "sustains": verdict.sustains,
                    "max_rate": rate == result.max_rate,
                    "saturation_rate": result.saturation_rate,
                }
            )
            row.update(_at_rate(verdict, seeds))
            rows.append(row)
    return rows


def answer_row(result: ConfigurationResult) -> dict[str, Any]:
    """One configuration's answer as one flat row (a `pagedkv sweep --plan` point): ``status``,
    ``max_rate``, ``next_rate``, ``saturation_rate``, ``limited_by`` (what failed above the answer, or
    why no rate sustains), and at the max rate the columns `csv_rows` gives every rate tried."""
    row: dict[str, Any] = {
        "status": result.status.value,
        "max_rate": result.max_rate,
        "next_rate": result.next_rate,
        "saturation_rate": result.saturation_rate,
        "limited_by": _limited_by(result),
    }
    if result.max_rate is not None and result.search is not None:
        seeds = result.points[result.configuration.index, result.max_rate]
        row.update(_at_rate(result.search.verdicts[result.max_rate], seeds))
    return row


def answer_metrics(slos: Sequence[Slo]) -> list[str]:
    """The numeric columns of `answer_row` for a plan with `slos`, known before anything runs."""
    names = [f"{slo.name}{suffix}" for slo in slos for suffix in ("", "_min", "_max")]
    return ["max_rate", "next_rate", "saturation_rate", "queue_growth_pct", *names, *POOLED_METRICS]


def _at_rate(verdict: Verdict, seeds: list[PointResult]) -> dict[str, Any]:
    """The queue's growth, every SLO's pooled value and seed range, and `pooled_metrics` at one rate."""
    row: dict[str, Any] = {"queue_growth_pct": 100 * verdict.growth_share}
    for check in verdict.checks:
        row[check.slo.name] = check.value
        row[f"{check.slo.name}_min"] = check.low
        row[f"{check.slo.name}_max"] = check.high
    return row | pooled_metrics(seeds)


def write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    """The rows as CSV, atomically; the header is the union of the rows' keys in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows({key: _cell(value) for key, value in row.items()} for row in rows)


# -- table cells ---------------------------------------------------------------------------------


def _rate(result: ConfigurationResult) -> str:
    if result.status is Status.NONE:
        return "none"
    assert result.max_rate is not None
    prefix = ">= " if result.status is Status.ABOVE else ""
    return f"{prefix}{result.max_rate:.3g}"


def _seeds_alone(plan: Plan, result: ConfigurationResult) -> str:
    evaluations = [(rate, seeds) for rate, _, seeds in result.evaluations()]
    knees = seed_knees(evaluations, plan.slos)
    return describe_knees(list(knees.values()), [rate for rate, _ in evaluations])


def _throughput(result: ConfigurationResult) -> str:
    return "-" if math.isnan(result.saturation_rate) else f"{result.saturation_rate:.3g}"


def _limited_by(result: ConfigurationResult) -> str:
    if result.status is Status.NONE:
        return f"no rate sustains: {result.why_none()}"
    if result.status is Status.ABOVE:
        return "nothing: every rate tried sustained"
    assert result.search is not None and result.next_rate is not None
    failures = "; ".join(result.search.verdicts[result.next_rate].failures())
    return f"at {result.next_rate:.3g} req/s: {failures}"


def _at_max_row(plan: Plan, result: ConfigurationResult) -> list[str]:
    assert result.search is not None and result.max_rate is not None
    verdict = result.search.verdicts[result.max_rate]
    metrics = pooled_metrics(result.points[result.configuration.index, result.max_rate])
    slos = [
        f"{format_seconds(c.value)} [{format_seconds(c.low)}-{format_seconds(c.high)}]"
        for c in verdict.checks
    ]
    pair = "{}/{}".format
    return [
        result.configuration.label,
        *slos,
        f"{metrics['batch_mean']:.1f}",
        f"{metrics['kv_usage_pct']:.1f} %",
        pair(format_seconds(metrics["ttft_s_p50"]), format_seconds(metrics["ttft_s_p99"])),
        pair(format_seconds(metrics["tpot_s_p50"]), format_seconds(metrics["tpot_s_p99"])),
        pair(format_seconds(metrics["e2e_s_p50"]), format_seconds(metrics["e2e_s_p99"])),
    ]


# -- JSON ----------------------------------------------------------------------------------------


def _configuration_json(plan: Plan, result: ConfigurationResult) -> dict[str, Any]:
    data: dict[str, Any] = {
        "label": result.configuration.label,
        "options": dict(result.configuration.values),
        "argv": list(result.configuration.argv),
        "status": result.status.value,
        "max_rate": result.max_rate,
        "next_rate": result.next_rate,
        "saturation_rate": result.saturation_rate,
    }
    if result.status is Status.NONE:
        data["why_none"] = result.why_none()
    elif result.next_rate is not None and result.search is not None:
        data["limited_by"] = result.search.verdicts[result.next_rate].failures()
    evaluations = result.evaluations()
    knees = seed_knees([(rate, seeds) for rate, _, seeds in evaluations], plan.slos)
    data["seed_knees"] = {str(seed): knee for seed, knee in knees.items()}
    data["points"] = [_point_json(rate, verdict, seeds) for rate, verdict, seeds in evaluations]
    return data


def _point_json(rate: float, verdict: Verdict, seeds: list[PointResult]) -> dict[str, Any]:
    return {
        "rate": rate,
        "sustains": verdict.sustains,
        "slos": {
            c.slo.name: {"value": c.value, "min": c.low, "max": c.high, "bound": c.slo.bound_s, "met": c.met}
            for c in verdict.checks
        },
        "queue_growth_share": verdict.growth_share,
        "keeps_up": verdict.keeps_up,
        "metrics": pooled_metrics(seeds),
        "seeds": [
            {
                "seed": p.seed,
                "batch_mean": p.batch_mean,
                "kv_usage_pct": p.kv_usage_pct,
                "queue_growth": p.queue_growth,
                "arrivals": p.arrivals,
                **{f"{name}_s_{stat}": _stat(p, name, stat) for name in LATENCIES for stat in STATISTICS},
            }
            for p in seeds
        ],
    }


def _stat(point: PointResult, name: str, stat: str) -> float:
    return statistic(point.latencies[name], stat)


def _clean(value: Any) -> Any:
    """NaN and infinities to None (not JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value
