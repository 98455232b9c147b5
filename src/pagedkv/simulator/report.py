"""The summary table printed after a comparison: one column per cache, one row per metric.

Invariant: every number in the table comes from `SimResult.summary()`, the same dictionary the
``--json`` output holds, so the terminal and the file never disagree. Rendering is tabulate's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tabulate import tabulate

from pagedkv.simulator.metrics import BREAKDOWN, BREAKDOWN_LABELS, SimResult

Row = tuple[str, Callable[[dict[str, Any]], str]]


def _pct(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda s: f"{s[key]:.1f}"


def _pair(first: str, second: str, fmt: str) -> Callable[[dict[str, Any]], str]:
    return lambda s: f"{_cell(s.get(first), fmt)} / {_cell(s.get(second), fmt)}"


def _optional(key: str, fmt: str, scale: float = 1.0) -> Callable[[dict[str, Any]], str]:
    return lambda s: _cell(s.get(key), fmt, scale)


def _cell(value: Any, fmt: str, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * scale:{fmt}}"


def _preemptions(s: dict[str, Any]) -> str:
    if "preemptions_recompute" not in s:
        return "never"
    return f"{s['preemptions_recompute']:,} / {s['swap_outs']:,}"


def _quantiles(name: str, fmt: str, scale: float = 1.0) -> Callable[[dict[str, Any]], str]:
    """``p50 / p90 / p99`` of one latency (`LATENCIES`), scaled to the row's unit."""
    return lambda s: " / ".join(_cell(s.get(f"{name}_s_{q}"), fmt, scale) for q in ("p50", "p90", "p99"))


def _mixed_means(s: dict[str, Any]) -> str:
    return f"{_cell(s.get('e2e_s_mean'), ',.1f')} / {_cell(s.get('normalized_s_mean'), '.3f')}"


ROWS: list[Row] = [
    *[(f"  {BREAKDOWN_LABELS[name]}", _pct(f"{name}_pct_mean")) for name in BREAKDOWN],
    ("slots held, mean / peak (%)", _pair("held_pct_mean", "held_pct_peak", ".1f")),
    ("tokens / slots held", lambda s: f"{s['token_util_of_held']:.3f}"),
    ("running sequences, mean / peak", _pair("batch_mean", "batch_peak", ".1f")),
    ("queue length, mean / peak", _pair("queue_mean", "queue_peak", ".1f")),
    ("output tokens per step / per s", _pair("tokens_per_step", "tokens_per_s", ",.1f")),
    ("requests finished", lambda s: f"{s['requests_finished']:,}/{s['requests']:,}"),
    ("TTFT p50 / p90 / p99 (s)", _quantiles("ttft", ",.2f")),
    ("TPOT p50 / p90 / p99 (ms)", _quantiles("tpot", ",.1f", 1e3)),
    ("latency p50 / p90 / p99 (s)", _quantiles("e2e", ",.1f")),
    ("normalized p50 / p90 / p99 (s/token)", _quantiles("normalized", ".3f")),
    ("latency mean (s) / normalized (s/token)", _mixed_means),
    ("steps / simulated time (s)", lambda s: f"{s['steps']:,} / {s['sim_time_s']:,.0f}"),
    ("preemptions: recompute / swap", _preemptions),
    ("prefix-cache hit rate (%)", _optional("prefix_hit_rate", ".1f", 100.0)),
    ("sharing savings (%)", _pct("sharing_savings_pct")),
]


def format_table(results: dict[str, SimResult], window: tuple[float, float] | None = None) -> str:
    """The comparison as aligned text; the first rows are the waste breakdown (the paper's Figure 2
    categories, with idle free memory apart). `window` restricts the per-step means and peaks to steps
    starting in ``[start, end)`` seconds."""
    summaries = [result.summary(window) for result in results.values()]
    capacity = next(iter(results.values())).capacity_slots
    span = f" in {window[0]:g}-{window[1]:g} s" if window else ""
    header = [f"% of the {capacity:,} KV slots, mean{span}", *results]
    rows = [[label, *(cell(s) for s in summaries)] for label, cell in ROWS]
    align = ("left", *["right"] * len(results))
    return tabulate(rows, headers=header, tablefmt="simple", disable_numparse=True, colalign=align)
