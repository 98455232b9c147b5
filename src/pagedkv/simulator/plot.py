"""The fragmentation figure: memory over time, the waste breakdown, and the batch it buys.

Panels: (a) KV memory holding tokens (solid) and held (dashed), % of capacity, over time, for the
naive and paged caches (the seed's plot); (b) the mean waste breakdown of every cache, stacked like
the paper's Figure 2; (c) running sequences over time. matplotlib is imported here, lazily, and
drawn through the Agg canvas without pyplot, so plotting never changes a caller's backend.

Invariant: the figure shows only numbers from the `SimResult`s it is given (per-step series are
averaged into at most `_MAX_POINTS` bins for drawing; the bars are `summary()` means).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pagedkv.simulator.metrics import BREAKDOWN, BREAKDOWN_LABELS, SimResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_MAX_POINTS = 600
_BREAKDOWN_COLORS = {
    "token_states": "#3a923a",
    "reservation": "#f2b701",
    "internal": "#d62728",
    "external": "#b0b0b0",
}
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
        series = results[name].series
        t, tokens = _binned(series.time, series.tokens)
        _, held = _binned(series.time, series.held)
        color = colors[name]
        memory.plot(
            t, [100.0 * v / capacity for v in tokens], color=color, lw=1.6, label=f"{name}: holding tokens"
        )
        memory.plot(
            t, [100.0 * v / capacity for v in held], color=color, lw=1.0, ls="--", label=f"{name}: held"
        )
        b_t, b_v = _binned(series.time, series.batch)
        batch.plot(b_t, b_v, color=color, lw=1.4, label=name)
    memory.set(ylim=(0, 105), xlabel="time (s)", ylabel="% of KV capacity")
    memory.set_title(
        f"KV memory over time, same requests, {capacity:,} token slots per cache"
        + (f"\n{subtitle}" if subtitle else ""),
        fontsize=11,
    )
    memory.legend(loc="lower center", ncol=2, fontsize=9)
    memory.grid(alpha=0.3)
    batch.set(xlabel="time (s)", ylabel="sequences", title="running batch size")
    batch.legend(fontsize=9)
    batch.grid(alpha=0.3)
    _breakdown_bars(bars, results, window)
    fig.savefig(path)


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
            color=_BREAKDOWN_COLORS[category],
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
    pair = [name for name in ("naive", "paged") if name in results]
    return pair if len(pair) == 2 else list(results)


def _colors(results: dict[str, SimResult]) -> dict[str, str]:
    spare = iter(_FALLBACK_COLORS * len(results))
    return {name: _CACHE_COLORS.get(name) or next(spare) for name in results}


def _binned(times: list[float], values: list[int]) -> tuple[list[float], list[float]]:
    """At most `_MAX_POINTS` points: the mean time and mean value of consecutive equal-size bins."""
    size = max(1, -(-len(values) // _MAX_POINTS))
    if size == 1:
        return list(times), [float(v) for v in values]
    xs, ys = [], []
    for start in range(0, len(values), size):
        chunk_t, chunk_v = times[start : start + size], values[start : start + size]
        xs.append(sum(chunk_t) / len(chunk_t))
        ys.append(sum(chunk_v) / len(chunk_v))
    return xs, ys
