"""Plan points (``pagedkv sweep --plan``): every point is a `pagedkv plan` of one configuration.

A plan point's argv is a `pagedkv plan` command line without ``--compare`` (the grid is the comparison):
`pagedkv simulate` options, ``--slo`` (repeated), ``--seeds``, ``--tolerance``. Its row is the point's
inputs, ``cache``, and the plan's answer (`pagedkv.plan.report.answer_row`: status, max_rate,
next_rate, saturation_rate, limited_by, and the SLO statistics and pooled metrics at the max rate).

Invariant: a plan point's inputs are every option its argv resolves to (simulate's, defaults included,
and the planner's), and `PlanOptions.inputs` builds the point's plan as `pagedkv plan` would -- SLOs,
seeds, stream length, tolerance, the model, KV blocks, trace -- so whatever the planner would refuse
stops the sweep before the first point, with one line naming the point and the flag. The options the
planner owns (``rate``, ``seed``, ``max_time``) and simulate's ``window`` are refused with the remedy.

Why one configuration a point, searched with the built-in serial ``map``: the sweep's runner already
runs the points in parallel (or on Ray), so a point is one worker's task, and its result depends on its
inputs only (every stream seeded by ``--seeds``), whichever backend or process runs it.
"""

from __future__ import annotations

import argparse
from typing import Any

from pagedkv.errors import UsageError
from pagedkv.plan.cli import add_plan_arguments
from pagedkv.plan.configurations import PLANNER_OWNS
from pagedkv.plan.report import answer_metrics, answer_row
from pagedkv.plan.run import DEFAULT_SEEDS, DEFAULT_TOLERANCE, Plan, build_plan, run_plan
from pagedkv.simulator.cli import add_arguments, parse_run_argv, resolved_options
from pagedkv.sweep.grid import Point
from pagedkv.sweep.options import RaisingParser, SimulateOptions

PLAN_REFUSED = {
    **{dest: remedy for dest, remedy in PLANNER_OWNS.items() if dest != "num_requests"},
    "window": "the planner measures the middle 80 % of each stream's requests; remove it",
}
PLAN_PLOT_METRICS = ("max_rate", "saturation_rate")


class PlanOptions(SimulateOptions):
    """The options of a plan point: simulate's, less those the planner owns, and the planner's own."""

    command = "`pagedkv simulate` or planner"
    default_caches = "paged"
    plot_metrics = PLAN_PLOT_METRICS

    def __init__(self) -> None:
        super().__init__()
        self._given = RaisingParser(prog="pagedkv sweep --plan", add_help=False)  # only what the argv sets
        add_arguments(self._given)
        self._add_arguments(self._given)
        for action in self._given._actions:
            action.default = argparse.SUPPRESS

    def _add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_plan_arguments(parser.add_argument_group("plan"))

    def refused(self) -> dict[str, str]:
        return PLAN_REFUSED

    def metrics(self) -> list[str]:
        """The numeric columns of a plan row that a plot can show (SLO statistics aside: they differ
        from point to point)."""
        return answer_metrics(())

    def inputs(self, argv: list[str]) -> dict[str, str]:
        """Every input of the plan `argv` describes, as results.csv writes it; `UsageError` if the
        planner would refuse it (the plan is built, every check `pagedkv plan` makes included)."""
        resolved = super().inputs(argv)
        if "," in resolved["caches"]:
            kinds = resolved["caches"].replace(" ", "")
            raise UsageError(
                f"--caches {kinds}: a plan point runs one cache; make it an axis: --grid caches={kinds}"
            )
        self.build(argv)
        return resolved

    def build(self, argv: list[str]) -> Plan:
        """The one-configuration plan `argv` describes (`pagedkv.plan.run.build_plan`)."""
        given = vars(self._given.parse_args(argv))
        slos, seeds = given.pop("slo", []), given.pop("seeds", DEFAULT_SEEDS)
        tolerance, num_requests = given.pop("tolerance", DEFAULT_TOLERANCE), given.pop("num_requests", None)
        return build_plan(given, (), slos, seeds, num_requests, tolerance)


def plan(point: Point) -> list[dict[str, Any]]:
    """The task every backend runs for a plan point: its plan, searched serially; one row (the options
    as the run used them -- stream length, KV slots, ... -- the cache and the answer)."""
    built = PlanOptions().build(list(point.argv))
    (result,) = run_plan(built)
    argv = [*result.configuration.argv, "--num-requests", str(built.num_requests)]
    resolved = resolved_options(parse_run_argv(argv), built.runs[0])
    return [resolved | {"cache": resolved["caches"].strip()} | answer_row(result)]
