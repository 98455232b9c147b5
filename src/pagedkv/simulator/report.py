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


ROWS: list[Row] = [
    *[(f"  {BREAKDOWN_LABELS[name]}", _pct(f"{name}_pct_mean")) for name in BREAKDOWN],
    ("slots held, mean / peak (%)", _pair("held_pct_mean", "held_pct_peak", ".1f")),
    ("tokens / slots held", lambda s: f"{s['token_util_of_held']:.3f}"),
    ("running sequences, mean / peak", _pair("batch_mean", "batch_peak", ".1f")),
    ("queue length, mean / peak", _pair("queue_mean", "queue_peak", ".1f")),
    ("output tokens per step / per s", _pair("tokens_per_step", "tokens_per_s", ",.1f")),
    ("requests finished", lambda s: f"{s['requests_finished']:,}/{s['requests']:,}"),
    ("TTFT p50 / p99 (s)", _pair("ttft_s_p50", "ttft_s_p99", ",.2f")),
    ("TPOT p50 / p99 (ms)", lambda s: _pair("p50", "p99", ",.1f")(_ms(s, "tpot"))),
    ("latency mean / p99 (s)", _pair("e2e_s_mean", "e2e_s_p99", ",.1f")),
    ("normalized latency mean (s/token)", _optional("normalized_s_mean", ".3f")),
    ("steps / simulated time (s)", lambda s: f"{s['steps']:,} / {s['sim_time_s']:,.0f}"),
    ("preemptions: recompute / swap", _preemptions),
    ("prefix-cache hit rate (%)", _optional("prefix_hit_rate", ".1f", 100.0)),
    ("sharing savings (%)", _pct("sharing_savings_pct")),
]


def _ms(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return {q: _scaled(summary.get(f"{name}_s_{q}"), 1e3) for q in ("p50", "p99")}


def _scaled(value: Any, scale: float) -> Any:
    return None if value is None else value * scale


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
