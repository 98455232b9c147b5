"""`pagedkv sweep`: run `pagedkv simulate` over a grid of options, locally or on Ray; one tidy table.

    pagedkv sweep --grid rate=1,2,4 --grid block-size=8,16,32 --num-requests 2000 --out-dir sweep-results

writes ``results.csv`` (appended point by point), ``results.parquet`` and summary plots into the folder.
With ``--plan`` every point is a one-configuration `pagedkv plan` (`pagedkv.sweep.plans`). See docs/sweep.md.

Invariant: everything the user gave is checked before the first point runs (option names and values,
the sweep file, the output folder, the backend); after that, a failing point becomes a row with its
error and the sweep goes on (exit status 1 at the end), and Ctrl-C leaves results.csv valid with
every point finished so far (exit 130; ``--resume`` runs the rest).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pagedkv.options import Formatter
from pagedkv.runner import add_backend_arguments
from pagedkv.sweep.options import PLAN_ONLY

if TYPE_CHECKING:
    from collections.abc import Callable

    from pagedkv.runner import Backend, Failure
    from pagedkv.sweep.config import SweepFile
    from pagedkv.sweep.grid import Grid, Point
    from pagedkv.sweep.options import SimulateOptions
    from pagedkv.sweep.plots import PlotSpec
    from pagedkv.sweep.table import ResultsTable

DEFAULT_OUT_DIR = "sweep-results"
RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"

_DESCRIPTION = (
    "Run `pagedkv simulate` once per point of a grid (every combination of the --grid axes, or of a "
    "--config file's [grid]) and collect one row per point and cache, every input and metric a column, "
    "in OUT_DIR/results.csv and results.parquet, plus summary plots. Any `pagedkv simulate` option "
    "given here is the same for every point. Points run in parallel on every core (--jobs) or on Ray "
    "(--ray). With --plan every point is instead a `pagedkv plan` of one configuration (the highest "
    "request rate it sustains under the --slo objectives), and --slo, --seeds and --tolerance may be given "
    "or be axes. See docs/sweep.md."
)


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="run simulate over a grid of options (locally or on Ray) into one CSV/Parquet table",
        description=_DESCRIPTION,
        formatter_class=Formatter,
        allow_abbrev=False,
    )
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--config", metavar="PATH", help="sweep file (TOML): [grid], [fixed], [[plot]]")
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="an axis: a simulate option (or with --plan a planner option: slo, seeds, tolerance) and its "
        "values (repeat for more axes; all combinations run)",
    )
    sweep.add_argument(
        "--out-dir", default=DEFAULT_OUT_DIR, help=f"folder for {RESULTS_CSV}, {RESULTS_PARQUET} and plots"
    )
    sweep.add_argument(
        "--resume",
        action="store_true",
        help=f"keep the points already in OUT_DIR/{RESULTS_CSV} and run only the others (and failed ones)",
    )
    sweep.add_argument(
        "--plot",
        action="append",
        default=[],
        metavar="METRIC:X[:LINES]",
        help="a plot: METRIC against the axis X, one line per value of the axis LINES (repeatable; "
        "default: a few headline metrics against the first axis)",
    )
    sweep.add_argument("--no-plot", action="store_true", help="draw no plots")
    sweep.add_argument(
        "--plan",
        action="store_true",
        help="make every point a `pagedkv plan` of one configuration (the highest rate it sustains under "
        "the --slo objectives) instead of one simulation; --slo, --seeds and --tolerance then may be "
        "given or be axes",
    )
    add_backend_arguments(parser)
    _add_simulate_options(parser)
    _add_plan_options(parser)
    parser.set_defaults(func=run)


def _add_simulate_options(parser: argparse.ArgumentParser) -> None:
    """Simulate's own options, fixed for every point; only those given reach the points."""
    from pagedkv.simulator.cli import add_run_arguments

    add_run_arguments(parser)
    parser.add_argument_group("summary").add_argument(
        "--window",
        type=float,
        nargs=2,
        metavar=("START", "END"),
        help="average the per-step metrics over steps starting in [START, END) s (default: the whole run)",
    )
    dests = set(_simulate_dests())
    for action in parser._actions:  # only the options given on the command line land in the namespace
        if action.dest in dests:
            action.default = argparse.SUPPRESS


def _add_plan_options(parser: argparse.ArgumentParser) -> None:
    """The planner's own options, for --plan: kept as typed (each point's argv is checked as a whole)."""
    from pagedkv.plan.cli import add_plan_arguments

    add_plan_arguments(parser.add_argument_group("plan (with --plan; every point the same, unless an axis)"))
    for action in parser._actions:
        if action.dest in PLAN_ONLY:
            action.default, action.type = argparse.SUPPRESS, None


def _simulate_dests() -> list[str]:
    from pagedkv.simulator.cli import add_run_arguments

    probe = argparse.ArgumentParser(add_help=False)
    add_run_arguments(probe)
    return [*vars(probe.parse_args([])), "window"]


def run(args: argparse.Namespace) -> int:
    from pagedkv.outputs import check_output_dir
    from pagedkv.runner import backend_from_args
    from pagedkv.sweep.config import read_config
    from pagedkv.sweep.grid import build_grid, check_points, simulate
    from pagedkv.sweep.options import SimulateOptions, point_key
    from pagedkv.sweep.table import PARQUET_EXTRA, ResultsTable, parquet_available

    started = time.perf_counter()
    options, task = SimulateOptions(), simulate
    if args.plan:
        from pagedkv.sweep.plans import PlanOptions, plan

        options, task = PlanOptions(), plan
    file = read_config(args.config) if args.config else None
    fixed = {dest: getattr(args, dest) for dest in [*_simulate_dests(), *PLAN_ONLY] if hasattr(args, dest)}
    grid = build_grid(options, file, args.grid, fixed)
    points = grid.points()
    inputs = check_points(options, points)
    keys = [point_key(given) for given in inputs]
    caches = sorted({given["caches"] or options.default_caches for given in inputs})
    plots = [] if args.no_plot else _plots(args.plot, file, options, grid)
    backend = backend_from_args(args)
    out_dir = check_output_dir(args.out_dir, "--out-dir")
    csv_path = out_dir / RESULTS_CSV
    _check_outputs(args, csv_path, [out_dir / RESULTS_PARQUET] + [out_dir / spec.filename for spec in plots])
    if not parquet_available():
        print(f"note: {RESULTS_PARQUET} needs pyarrow ({PARQUET_EXTRA}); writing {RESULTS_CSV} only")

    out_dir.mkdir(exist_ok=True)
    table = ResultsTable.open(csv_path, options.columns, args.resume)
    done = table.done()
    todo = [point for point, key in zip(points, keys, strict=True) if key not in done]
    print(f"sweep:   {len(points)} points ({grid.shape()}), caches {'; '.join(caches)}")
    print(f"backend: {backend.describe()}")
    if len(todo) < len(points):
        print(f"resume:  {len(points) - len(todo)} points already in {csv_path}; {len(todo)} to run")
    try:
        failures = _run_points(table, task, todo, inputs, keys, backend, options.all_dests)
    except KeyboardInterrupt:
        table.close()
        finished = len(table.done() & set(keys))
        note = f"{finished} of {len(points)} points are in {csv_path}; rerun with --resume to run the rest"
        print(note, file=sys.stderr)
        raise
    table.finish(keys)
    table.close()
    _write_outputs(table.rows, out_dir, plots, grid.names)
    print(f"({time.perf_counter() - started:.1f} s)")
    return _report_failures(failures, len(points), csv_path)


def _run_points(
    table: ResultsTable,
    task: Callable[[Point], list[dict[str, Any]]],
    todo: list[Point],
    inputs: list[dict[str, str]],
    keys: list[str],
    backend: Backend,
    option_names: set[str],
) -> list[tuple[Point, Failure]]:
    """Run `task` (`grid.simulate` or `plans.plan`) on each point of `todo` on `backend`, adding each
    finished point to `table` at once; the failures."""
    from pagedkv.progress import Progress
    from pagedkv.runner import Failure, run_tasks
    from pagedkv.sweep.table import failure_row, point_rows

    failures = []
    with Progress(len(todo), "sweep", "point") as progress:
        for point, result in run_tasks(task, todo, backend):
            given, key = inputs[point.index], keys[point.index]
            if isinstance(result, Failure):
                failures.append((point, result))
                table.add_point(failure_row(given, key, result.error))
            else:
                table.add_point(point_rows(given, key, result, option_names))
            progress.update()
    return failures


def _write_outputs(rows: list[dict[str, str]], out_dir: Path, plots: list[PlotSpec], axes: list[str]) -> None:
    """results.csv is written; add results.parquet (when pyarrow is there) and the plots."""
    from pagedkv.sweep.plots import draw
    from pagedkv.sweep.table import parquet_available, write_parquet

    print(f"\nwrote {out_dir / RESULTS_CSV} ({len(rows)} rows)")
    if parquet_available():
        write_parquet(out_dir / RESULTS_CSV, out_dir / RESULTS_PARQUET)
        print(f"wrote {out_dir / RESULTS_PARQUET}")
    for spec in plots:
        path = out_dir / spec.filename
        draw(spec, rows, [name for name in axes if name not in (spec.x, spec.lines)], path)
        print(f"wrote {path}")


def _plots(given: list[str], file: SweepFile | None, options: SimulateOptions, grid: Grid) -> list[PlotSpec]:
    """The plots asked for (file first, then --plot), or the default ones; checked before any work."""
    from pagedkv.sweep.plots import default_plots, parse_plot

    metrics = options.metrics()
    texts = [*(file.plots if file is not None else []), *given]
    if texts:
        return [parse_plot(text, options, grid.names, metrics) for text in texts]
    return default_plots([(name, len(values)) for name, values in grid.axes], options.plot_metrics, metrics)


def _check_outputs(args: argparse.Namespace, csv_path: Path, others: list[Path]) -> None:
    from pagedkv.errors import UsageError
    from pagedkv.outputs import check_output_file

    if csv_path.exists() and not args.resume:
        raise UsageError(
            f"--out-dir {args.out_dir}: {csv_path} exists; pass --resume to keep its points and run the "
            "rest, or choose another --out-dir"
        )
    if not csv_path.parent.exists():
        return  # created later; check_output_dir has checked its parent
    for path in (csv_path, *others):
        check_output_file(path, "--out-dir")


def _report_failures(failures: list[tuple[Point, Failure]], total: int, csv_path: Path) -> int:
    if not failures:
        return 0
    print(f"\n{len(failures)} of {total} points failed (rows with an error in {csv_path}):", file=sys.stderr)
    by_error: dict[str, list[str]] = {}
    for point, failure in sorted(failures, key=lambda item: item[0].index):
        by_error.setdefault(failure.error, []).append(point.label())
    for error, labels in by_error.items():
        print(f"  {error}", file=sys.stderr)
        for label in labels:
            print(f"    {label}", file=sys.stderr)
    return 1
