"""Summary plots of a sweep: one metric against one axis, one line per value of another.

A plot is ``METRIC:X[:LINES]`` (``--plot``, or ``[[plot]]`` in the sweep file): X and LINES are grid
axes or ``cache``. Every other axis (seeds, say) is averaged over: the line is the mean and the shaded
band spans the smallest to the largest value. Without ``cache`` as X or LINES, each cache gets its own
panel. Numeric X values are placed on a numeric axis in order; others (trace files) in grid order.

Invariant: a plot shows only the numbers of results.csv's rows without an error, and every file is
written atomically (matplotlib's Agg canvas, no pyplot, so a caller's backend is never changed).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pagedkv.errors import UsageError
from pagedkv.outputs import atomic_path
from pagedkv.sweep.options import SimulateOptions

if TYPE_CHECKING:
    from matplotlib.axes import Axes

CACHE = "cache"


@dataclass(frozen=True)
class PlotSpec:
    """``metric`` against the column ``x``, one line per value of ``lines`` (None: a single line)."""

    metric: str
    x: str
    lines: str | None

    @property
    def filename(self) -> str:
        return f"{self.metric}-vs-{self.x}" + (f"-by-{self.lines}" if self.lines else "") + ".png"


def parse_plot(text: str, options: SimulateOptions, axes: list[str], metrics: list[str]) -> PlotSpec:
    """``METRIC:X[:LINES]`` checked against the grid's `axes` and the `metrics` simulate reports."""
    where = f"--plot {text}"
    parts = [part.strip() for part in text.split(":")]
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(f"{where}: expected METRIC:X or METRIC:X:LINES, e.g. e2e_s_mean:rate:block-size")
    metric = parts[0]
    if metric not in metrics:
        raise UsageError(f"{where}: no metric {metric!r}; the metrics are {', '.join(metrics)}")
    x = _column(parts[1], options, axes, where)
    lines = _column(parts[2], options, axes, where) if len(parts) == 3 else None
    if lines == x:
        raise UsageError(f"{where}: X and LINES are both {x}; pick two different axes")
    return PlotSpec(metric, x, lines)


def default_plots(axes: list[tuple[str, int]], defaults: Sequence[str], metrics: list[str]) -> list[PlotSpec]:
    """With no ``--plot``: each of the `defaults` metrics against the first axis with several values (seeds
    aside), one line per value of the next such axis, or per cache when there is none."""
    useful = [name for name, size in axes if size > 1 and name != "seed"]
    if not useful:
        return []
    lines = useful[1] if len(useful) > 1 else CACHE
    return [PlotSpec(metric, useful[0], lines) for metric in defaults if metric in metrics]


def draw(spec: PlotSpec, rows: list[dict[str, str]], averaged: list[str], path: Path) -> None:
    """Draw `spec` from results.csv `rows` into `path` (PNG); `averaged` names the axes averaged over."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = _panels(spec, [row for row in rows if not row.get("error")])
    fig = Figure(figsize=(4.2 * len(panels) + 1.2, 4.0), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (title, lines) in zip(axes, panels.items(), strict=True):
        _draw_panel(ax, spec, lines)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(spec.x)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(spec.metric)
    note = f"; mean (band: min-max) over {', '.join(averaged)}" if averaged else ""
    fig.suptitle(f"{spec.metric} vs {spec.x}{note}", fontsize=11)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _column(name: str, options: SimulateOptions, axes: list[str], where: str) -> str:
    if name == CACHE:
        return CACHE
    dest = options.lookup(name, where).dest
    if dest not in axes:
        raise UsageError(
            f"{where}: {dest} is not an axis of this sweep; use one of {', '.join([*axes, CACHE])}"
        )
    return dest


Samples = dict[str, dict[str, list[float]]]  # line label -> x value -> metric values


def _panels(spec: PlotSpec, rows: list[dict[str, str]]) -> dict[str, Samples]:
    """Panel title -> line -> x -> values, keeping first-seen (grid) order everywhere."""
    by_cache = CACHE not in (spec.x, spec.lines)
    panels: dict[str, Samples] = {}
    for row in rows:
        value = _number(row.get(spec.metric, ""))
        if value is None:
            continue
        title = f"cache {row[CACHE]}" if by_cache else ""
        line = f"{spec.lines}={row[spec.lines]}" if spec.lines else spec.metric
        panels.setdefault(title, {}).setdefault(line, defaultdict(list))[row[spec.x]].append(value)
    return panels or {"no finished point": {}}


def _draw_panel(ax: Axes, spec: PlotSpec, lines: Samples) -> None:
    xs = list(dict.fromkeys(x for samples in lines.values() for x in samples))
    numbers = [_number(x) for x in xs]
    numeric = all(number is not None for number in numbers)
    position = {
        x: (number if number is not None and numeric else float(i))
        for i, (x, number) in enumerate(zip(xs, numbers, strict=True))
    }
    for label, samples in lines.items():
        points = sorted(samples, key=lambda x: position[x])
        at = [position[x] for x in points]
        means = [sum(samples[x]) / len(samples[x]) for x in points]
        (line,) = ax.plot(at, means, marker="o", label=label)
        if any(len(samples[x]) > 1 for x in points):
            low, high = [min(samples[x]) for x in points], [max(samples[x]) for x in points]
            ax.fill_between(at, low, high, color=line.get_color(), alpha=0.15)
    if not numeric:
        ax.set_xticks(list(position.values()), [Path(x).name or x for x in xs], rotation=20)
    if len(lines) > 1:
        ax.legend(fontsize=8)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value
