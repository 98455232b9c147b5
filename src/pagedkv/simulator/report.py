"""The summary table printed after a comparison: one column per cache, one row per metric.

Invariant: every number in the table comes from `SimResult.summary()`, the same dictionary the
``--json`` output holds, so the terminal and the file never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pagedkv.simulator.metrics import BREAKDOWN, BREAKDOWN_LABELS, SimResult

Row = tuple[str, Callable[[dict[str, Any]], str]]


def _pct(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda s: f"{s[key]:.1f}"


def _pair(first: str, second: str, fmt: str) -> Callable[[dict[str, Any]], str]:
    return lambda s: f"{s[first]:{fmt}} / {s[second]:{fmt}}"


def _optional(key: str, fmt: str, scale: float = 1.0) -> Callable[[dict[str, Any]], str]:
    def cell(s: dict[str, Any]) -> str:
        value = s.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value * scale:{fmt}}"

    return cell


def _preemptions(s: dict[str, Any]) -> str:
    if "preemptions_recompute" not in s:
        return "never"
    return f"{s['preemptions_recompute']:,} / {s['swap_outs']:,}"


ROWS: list[Row] = [
    *[(f"  {BREAKDOWN_LABELS[name]}", _pct(f"{name}_pct_mean")) for name in BREAKDOWN],
    ("slots held, mean / peak (%)", _pair("held_pct_mean", "held_pct_peak", ".1f")),
    ("tokens / slots held", lambda s: f"{s['token_util_of_held']:.3f}"),
    ("running sequences, mean / peak", _pair("batch_mean", "batch_peak", ".1f")),
    ("queue length, mean / peak", _pair("queue_mean", "queue_peak", ".1f")),
    ("tokens generated per step", lambda s: f"{s['tokens_per_step']:.1f}"),
    ("requests finished", lambda s: f"{s['requests_finished']:,}/{s['requests']:,}"),
    ("mean latency (steps)", _optional("latency_steps_mean", ",.0f")),
    ("mean latency (s)", _optional("latency_s_mean", ",.1f")),
    ("steps / simulated time (s)", lambda s: f"{s['steps']:,} / {s['sim_time_s']:,.0f}"),
    ("preemptions: recompute / swap", _preemptions),
    ("prefix-cache hit rate (%)", _optional("prefix_hit_rate", ".1f", 100.0)),
    ("sharing savings (%)", _pct("sharing_savings_pct")),
]


def format_table(results: dict[str, SimResult], window: tuple[float, float] | None = None) -> str:
    """The comparison as aligned text; the first rows are the paper's waste breakdown (Figure 2).

    `window` restricts the per-step means and peaks to steps starting in ``[start, end)`` seconds.
    """
    summaries = [result.summary(window) for result in results.values()]
    capacity = next(iter(results.values())).capacity_slots
    span = f" in {window[0]:g}-{window[1]:g} s" if window else ""
    header = [f"% of the {capacity:,} KV slots, mean{span}", *results]
    lines = [[label, *(cell(s) for s in summaries)] for label, cell in ROWS]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def render(row: list[str]) -> str:
        return "  ".join(
            [row[0].ljust(widths[0]), *(v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True))]
        )

    return "\n".join([render(header), *(render(row) for row in lines)])
