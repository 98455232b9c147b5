"""The grid of a sweep: axes and fixed options, expanded into points (one simulate run each).

Invariant: the points are the Cartesian product of the axes in the order given (the first axis varies
slowest), each point's argv sets the fixed options and then its own axis values, and no two points
have the same inputs (`SimulateOptions.inputs`), so every point is a distinct simulation that can be
recognised again on `--resume`. Every point's argv is parsed by simulate's parser here, before anything
runs: a value simulate would refuse stops the sweep with a one-line error naming the point.

Sources: a TOML file (`config.read_config`) and the command line (``--grid NAME=V1,V2`` and ordinary
simulate flags). The command line wins over the file for the same option; the same option as an
axis and a fixed value from one source is refused.

Why every point is its own seeded task: ``seed`` is an input like any other (an axis, or fixed at
simulate's default 0), so a point's result depends on its inputs only, whichever backend or process
runs it and in whatever order.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from pagedkv.errors import UsageError
from pagedkv.simulator.cli import run_point
from pagedkv.sweep.config import SweepFile
from pagedkv.sweep.options import SimulateOptions, cell


@dataclass(frozen=True)
class Point:
    """One simulation of the sweep: ``index`` in grid order, its axis values and simulate argv."""

    index: int
    values: tuple[tuple[str, str], ...]  # (option dest, value as simulate's argv writes it), axis order
    argv: tuple[str, ...]

    def label(self) -> str:
        return " ".join(f"{name}={value}" for name, value in self.values) or "(the only point)"


@dataclass(frozen=True)
class Grid:
    """Axes (dest -> (label, argv) per value) and the fixed argv; `points()` expands them."""

    axes: tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], ...]
    fixed: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.axes]

    def shape(self) -> str:
        """``rate x block_size = 3 x 4`` (or ``one point`` without axes)."""
        if not self.axes:
            return "one point"
        return f"{' x '.join(self.names)} = {' x '.join(str(len(values)) for _, values in self.axes)}"

    def points(self) -> list[Point]:
        points = []
        for index, combination in enumerate(itertools.product(*(values for _, values in self.axes))):
            argv = list(self.fixed)
            for _, value_argv in combination:
                argv.extend(value_argv)
            labels = tuple((name, label) for name, (label, _) in zip(self.names, combination, strict=True))
            points.append(Point(index, labels, tuple(argv)))
        return points


def simulate(point: Point) -> list[dict[str, Any]]:
    """The task every backend runs for a point: `run_point` on its argv (one row per cache)."""
    return run_point(list(point.argv))


@dataclass(frozen=True)
class _Setting:
    kind: str  # "axis" or "fixed"
    source: int  # 0 the file, 1 the command line (wins)
    where: str  # how the user wrote it, for messages
    value: Any  # the axis' list of values, or the fixed value


def build_grid(
    options: SimulateOptions,
    file: SweepFile | None,
    cli_axes: list[str],
    cli_fixed: dict[str, Any],
) -> Grid:
    """Merge the file's and the command line's axes and fixed options (the command line wins)."""
    settings: dict[str, _Setting] = {}
    if file is not None:
        for name, values in file.axes.items():
            _set(options, settings, name, _Setting("axis", 0, f"--config {file.path} [grid] {name}", values))
        for name, value in file.fixed.items():
            _set(options, settings, name, _Setting("fixed", 0, f"--config {file.path} [fixed] {name}", value))
    for text in cli_axes:
        name, values = _parse_axis(text)
        _set(options, settings, name, _Setting("axis", 1, f"--grid {text}", values))
    for name, value in cli_fixed.items():
        _set(options, settings, name, _Setting("fixed", 1, f"--{name.replace('_', '-')}", value))
    axes: list[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]]] = []
    fixed: list[str] = []
    for dest, setting in settings.items():
        action = options.lookup(dest, setting.where)
        if setting.kind == "fixed":
            fixed.extend(options.to_argv(action, setting.value, setting.where))
            continue
        choices = tuple((cell(v), tuple(options.to_argv(action, v, setting.where))) for v in setting.value)
        axes.append((dest, choices))
    return Grid(tuple(axes), tuple(fixed))


def _set(options: SimulateOptions, settings: dict[str, _Setting], name: str, new: _Setting) -> None:
    dest = options.lookup(name, new.where).dest
    old = settings.get(dest)
    if old is not None and old.source == new.source:
        what = "an axis and fixed" if old.kind != new.kind else "given twice"
        raise UsageError(f"{new.where}: {dest} is {what} (also {old.where}); keep one")
    if old is None or new.source > old.source:
        settings.pop(dest, None)  # the command line's setting goes last, in its own order
        settings[dest] = new


def check_points(options: SimulateOptions, points: list[Point]) -> list[dict[str, str]]:
    """Every point's inputs (in point order); `UsageError` for a point simulate would refuse or for
    two points that are the same simulation."""
    inputs: list[dict[str, str]] = []
    seen: dict[tuple[str, ...], Point] = {}
    for point in points:
        try:
            resolved = options.inputs(list(point.argv))
        except UsageError as exc:
            raise UsageError(f"point {point.label()}: {exc}") from None
        key = tuple(resolved.values())
        if key in seen:
            raise UsageError(
                f"points {seen[key].label()} and {point.label()} are the same simulation; "
                "remove the duplicate axis value"
            )
        seen[key] = point
        inputs.append(resolved)
    return inputs


def _parse_axis(text: str) -> tuple[str, list[str]]:
    name, sep, values = text.partition("=")
    parts = [part.strip() for part in values.split(",")]
    if not sep or not name.strip() or not any(parts) or "" in parts:
        raise UsageError(
            f"--grid {text!r}: expected NAME=V1,V2,... with a simulate option and its values, "
            "e.g. --grid rate=1,2,4"
        )
    return name.strip(), parts
