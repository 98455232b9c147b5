"""The fragmentation figure: memory over time, the waste breakdown, and the batch it buys.

Panels: (a) KV memory holding tokens (solid) and held (dashed), % of capacity, over time, for the
naive and paged caches (the seed's plot); (b) the mean waste breakdown of every cache, stacked like
the paper's Figure 2; (c) running sequences over time. matplotlib is imported here, lazily, and
drawn through the Agg canvas without pyplot, so plotting never changes a caller's backend.

Invariant: the figure shows only numbers from the `SimResult`s it is given (the lines are the
run's down-sampled `trend`, means over bins of consecutive steps; the bars are `summary()` means).
Legends sit outside the axes, so they never hide data.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pagedkv.outputs import atomic_path
from pagedkv.simulator.metrics import BREAKDOWN, BREAKDOWN_COLORS, BREAKDOWN_LABELS, SimResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_CACHE_COLORS = {
    "naive": "#d62728",
    "orca-max": "#9467bd",
    "orca-pow2": "#8c564b",
    "orca-oracle": "#ff7f0e",
    "paged": "#1f77b4",
}
_FALLBACK_COLORS = ("#17becf", "#7f7f7f", "#bcbd22", "#e377c2", "#2ca02c")


def plot_comparison(
    results: dict[str, SimResult],
    path: str | os.PathLike[str],
    *,
    subtitle: str = "",
    window: tuple[float, float] | None = None,
) -> None:
    """Write the three-panel figure for `results` (all run on the same requests) to `path`.

    The bars average over `window` (``(start_s, end_s)``), or over the whole run when it is None.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 8.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 2, height_ratios=(1.1, 1))
    memory, bars, batch = (
        fig.add_subplot(grid[0, :]),
        fig.add_subplot(grid[1, 0]),
        fig.add_subplot(grid[1, 1]),
    )
    capacity = next(iter(results.values())).capacity_slots
    lines = _line_caches(results)
    colors = _colors(results)
    for name in lines:
        trend = results[name].trend.points()
        t, tokens, held = trend["time"], trend["tokens"], trend["held"]
        color = colors[name]
        memory.plot(
            t, [100.0 * v / capacity for v in tokens], color=color, lw=1.6, label=f"{name}: holding tokens"
        )
        memory.plot(
            t, [100.0 * v / capacity for v in held], color=color, lw=1.0, ls="--", label=f"{name}: held"
        )
        batch.plot(t, trend["batch"], color=color, lw=1.4, label=name)
    memory.set(ylim=(0, 105), xlabel="time (s)", ylabel="% of KV capacity")
    memory.set_title(
        f"KV memory over time, same requests, {capacity:,} token slots per cache"
        + (f"\n{subtitle}" if subtitle else ""),
        fontsize=11,
    )
    memory.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    memory.grid(alpha=0.3)
    batch.set(xlabel="time (s)", ylabel="sequences", title="running batch size")
    batch.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    batch.grid(alpha=0.3)
    _breakdown_bars(bars, results, window)
    suffix = os.fspath(path).rsplit(".", 1)[-1].lower()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=suffix)


def _breakdown_bars(ax: Axes, results: dict[str, SimResult], window: tuple[float, float] | None) -> None:
    names = list(results)
    summaries = [results[name].summary(window) for name in names]
    bottoms = [0.0] * len(names)
    for category in BREAKDOWN:
        values = [s[f"{category}_pct_mean"] for s in summaries]
        ax.bar(
            names,
            values,
            bottom=bottoms,
            color=BREAKDOWN_COLORS[category],
            label=BREAKDOWN_LABELS[category],
            width=0.6,
        )
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    for i, s in enumerate(summaries):
        ax.text(
            i, s["token_states_pct_mean"] / 2, f"{s['token_states_pct_mean']:.0f}%", ha="center", fontsize=9
        )
    span = f"{window[0]:g}-{window[1]:g} s" if window else "the run"
    ax.set(ylim=(0, 100), ylabel=f"% of KV capacity (mean over {span})", title="where KV memory goes")
    ax.tick_params(axis="x", labelsize=8, rotation=15)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)


def _line_caches(results: dict[str, SimResult]) -> list[str]:
    """The seed's pair (naive vs paged) when present, else every cache."""
    pair: list[str] = [name for name in ("naive", "paged") if name in results]
    return pair if len(pair) == 2 else list(results)


def _colors(results: dict[str, SimResult]) -> dict[str, str]:
    spare = iter(_FALLBACK_COLORS * len(results))
    return {name: _CACHE_COLORS.get(name) or next(spare) for name in results}
