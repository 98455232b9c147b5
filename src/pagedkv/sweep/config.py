"""A sweep described in a small TOML file (``pagedkv sweep --config sweep.toml``).

    [grid]                     # the axes: every combination is one point
    rate = [1, 2, 4]
    block-size = [8, 16, 32]
    seed = [0, 1, 2]

    [fixed]                    # the same for every point: any `pagedkv simulate` option
    num-requests = 2000
    caches = "orca-max,paged"

    [[plot]]                   # optional; without any, default plots are drawn
    metric = "e2e_s_mean"
    x = "rate"
    lines = "block-size"

Invariant: what this module returns is exactly what the file says, in the file's order; option names
and values are checked against simulate's options later (`grid.build_grid`), where the command line's
axes and options are merged in, so one set of checks covers both sources. A key this module does not
know is refused with the file and key named, so a typo never silently drops an axis.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pagedkv.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TABLES = ("grid", "fixed", "plot")
PLOT_KEYS = ("metric", "x", "lines")


@dataclass(frozen=True)
class SweepFile:
    """The file's axes (name -> values), fixed options (name -> value) and plots (METRIC:X[:LINES])."""

    path: str
    axes: dict[str, list[Any]]
    fixed: dict[str, Any]
    plots: list[str]


def read_config(path: str) -> SweepFile:
    """Parse the sweep file at `path`; `UsageError` naming ``--config`` and the key on any problem."""
    where = f"--config {path}"
    try:
        with Path(path).open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{where}: is a folder; give the TOML file") from None
    except OSError as exc:
        raise UsageError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where}: not valid TOML: {exc}") from None
    unknown = [key for key in document if key not in TABLES]
    if unknown:
        raise UsageError(f"{where}: unknown table {unknown[0]!r}; a sweep file has [grid], [fixed], [[plot]]")
    return SweepFile(
        path=path,
        axes=_axes(document.get("grid", {}), where),
        fixed=_table(document.get("fixed", {}), f"{where} [fixed]"),
        plots=_plots(document.get("plot", []), where),
    )


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{where}: must be a table of option = value")
    return dict(value)


def _axes(value: Any, where: str) -> dict[str, list[Any]]:
    axes = {}
    for name, values in _table(value, f"{where} [grid]").items():
        if not isinstance(values, list) or not values:
            raise UsageError(
                f"{where} [grid] {name}: an axis is a non-empty list of values, e.g. {name} = [1, 2]; "
                "put a single value under [fixed]"
            )
        axes[name] = values
    return axes


def _plots(value: Any, where: str) -> list[str]:
    if not isinstance(value, list):
        raise UsageError(f"{where}: plots are [[plot]] tables with metric, x and (optional) lines")
    plots = []
    for number, table in enumerate(value, 1):
        here = f"{where} [[plot]] #{number}"
        if not isinstance(table, dict):
            raise UsageError(f"{here}: must be a table with metric, x and (optional) lines")
        unknown = [key for key in table if key not in PLOT_KEYS]
        if unknown or "metric" not in table or "x" not in table:
            bad = f"unknown key {unknown[0]!r}" if unknown else "needs metric and x"
            raise UsageError(f"{here}: {bad}; a plot has metric, x and (optional) lines")
        parts = [str(table["metric"]), str(table["x"])] + ([str(table["lines"])] if "lines" in table else [])
        plots.append(":".join(parts))
    return plots
