"""The plan's plot, shaped like the PagedAttention paper's Fig. 12: latency against request rate, one
curve per configuration, the SLO drawn, the knee marked.

Invariant: the plot draws only numbers that are in the JSON and the CSV -- each rate the search tried,
the SLO statistic pooled over the seeds as the curve and the lowest and highest single seed as its band
-- with one panel per SLO (or, without SLOs, the p99 end-to-end latency), the bound as a dashed line,
and each configuration's highest sustained rate as a star on its curve. Rates past the knee have
latencies that grow without bound, so the y axis stops at 2.5 x the bound, as the paper's stops at
its threshold, and the x axis a little past the first failing rate above the highest answer (the
search's first, far bracketing rates are in the JSON). The file is written atomically; matplotlib
is imported here only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pagedkv.outputs import atomic_path
from pagedkv.plan.run import ConfigurationResult, Plan
from pagedkv.plan.slo import METRIC_LABELS, Slo
from pagedkv.plan.verdict import judge

Y_LIMIT = 2.5  # times the SLO bound
X_LIMIT = 1.3  # times the highest rate a curve must show (its first failure above its answer)
NO_SLO = Slo("p99", "e2e", 1e9)  # drawn when there is no SLO (its bound is never shown)


def draw_plan(plan: Plan, results: Sequence[ConfigurationResult], path: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slos = plan.slos or (NO_SLO,)
    fig, axes = plt.subplots(1, len(slos), figsize=(5.2 * len(slos), 3.8), squeeze=False)
    for ax, slo in zip(axes[0], slos, strict=True):
        _panel(ax, slo, results, drawn_bound=bool(plan.slos))
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lstrip(".").lower() or "png", dpi=110)
    finally:
        plt.close(fig)


def _panel(ax: Any, slo: Slo, results: Sequence[ConfigurationResult], drawn_bound: bool) -> None:
    knees: list[float] = []  # the statistic at each answer (scales the y axis without a bound)
    for result in results:
        evaluations = result.evaluations()
        if not evaluations:
            continue
        rates = [rate for rate, _, _ in evaluations]
        checks = [judge(seeds, (slo,), keep_up=False).checks[0] for _, _, seeds in evaluations]
        values = [check.value for check in checks]
        shown = "none" if result.max_rate is None else f"{result.max_rate:.3g} req/s"
        (line,) = ax.plot(
            rates, values, marker="o", markersize=3, lw=1.2, label=f"{result.configuration.label}: {shown}"
        )
        color = line.get_color()
        ax.fill_between(rates, [c.low for c in checks], [c.high for c in checks], color=color, alpha=0.15)
        if result.max_rate is not None:
            knees.append(values[rates.index(result.max_rate)])
            ax.plot([result.max_rate], [knees[-1]], marker="*", markersize=12, color=color, zorder=5)
    if drawn_bound:
        ax.axhline(slo.bound_s, color="black", ls="--", lw=0.9)
        ax.set_ylim(0, Y_LIMIT * slo.bound_s)
        ax.set_title(f"SLO: {slo.describe()} (dashed)", fontsize=8)
    elif knees:
        ax.set_ylim(0, Y_LIMIT * max(knees))
    ax.set_xlim(0, X_LIMIT * max((_right(r) for r in results), default=1.0))
    ax.set_xlabel("request rate (req/s)")
    ax.set_ylabel(f"{slo.statistic} {METRIC_LABELS[slo.metric]} (s)")
    ax.grid(ls=":", lw=0.5)


def _right(result: ConfigurationResult) -> float:
    """The rate a configuration's curve must show: its first failure above the answer, or the answer."""
    rates = [rate for rate, _, _ in result.evaluations()]
    return result.next_rate or result.max_rate or max(rates, default=0.0)
