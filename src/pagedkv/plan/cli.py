"""`pagedkv plan`: the highest request rate a deployment sustains under latency SLOs, per configuration.

    pagedkv plan --model Llama-3.1-8B --gpu H100-80GB --trace AzureLLMInferenceTrace_conv.csv \\
        --slo p99:ttft=2s --slo p99:tpot=100ms --compare block-size=16,32

Invariant: everything is checked before the first simulation -- the SLOs, the ``--compare`` axes and
every configuration they make (model, GPUs, KV blocks, trace, every request fits, the token budget),
the seeds, the output files, matplotlib when plotting, the backend -- and a mistake is one line naming
the flag, exit 2. Then the plan runs (progress on a terminal), prints its table, and writes the plot,
the JSON and the CSV atomically; Ctrl-C stops the workers and leaves no file half-written (exit 130).
See docs/plan.md for the definition of "sustains" and the search.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING

from pagedkv.options import Formatter, open_fraction, seed_list
from pagedkv.runner import add_backend_arguments

if TYPE_CHECKING:
    from pagedkv.plan.run import Plan

DEFAULT_OUT = "plan.png"
DEFAULT_SEEDS = "0-2"

_LABELS = {"slos": "SLOs"}

_DESCRIPTION = (
    "Find the highest request rate each configuration sustains: every --slo met over the measured "
    "requests of every seed's Poisson stream, pooled, and a queue that does not grow. Takes every "
    "`pagedkv simulate` option (the model, GPUs, trace, scheduler, ...), the same for every configuration; "
    "--compare NAME=V1,V2 varies one (repeat it: every combination is compared). See docs/plan.md."
)


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="the highest request rate each configuration sustains under latency SLOs (a search over rate)",
        description=_DESCRIPTION,
        formatter_class=Formatter,
        allow_abbrev=False,
    )
    plan = parser.add_argument_group("plan")
    add_plan_arguments(plan)
    plan.add_argument(
        "--compare",
        action="append",
        metavar="NAME=V1,V2,...",
        help="a simulate option and the values to compare, e.g. block-size=8,16,32 or caches=paged,orca-max "
        "(repeat for more options: every combination is a configuration)",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--out", default=DEFAULT_OUT, metavar="PATH", help="the plot (.png, .svg or .pdf)")
    output.add_argument("--no-plot", action="store_true", help="do not draw the plot")
    output.add_argument("--json", metavar="PATH", help="write the plan: every configuration, rate and seed")
    output.add_argument("--csv", metavar="PATH", help="write one row per configuration and rate tried")
    add_backend_arguments(parser)
    _add_simulate_options(parser)
    parser.set_defaults(func=run)


def add_plan_arguments(group: argparse._ArgumentGroup) -> None:
    """The planner's own options (``--slo``, ``--seeds``, ``--tolerance``), shared with `pagedkv sweep
    --plan`, whose points are plans."""
    group.add_argument(
        "--slo",
        action="append",
        metavar="STAT:METRIC=VALUE",
        help="a latency objective, e.g. p99:ttft=2s, p99:tpot=100ms, mean:normalized=1s (STAT: mean or pNN; "
        "METRIC: ttft, tpot, e2e, normalized; units s or ms); repeat for several",
    )
    group.add_argument(
        "--seeds",
        type=seed_list,
        default=DEFAULT_SEEDS,
        help="request-stream seeds pooled at every rate, e.g. 0-4 or 0,1,2",
    )
    group.add_argument(
        "--tolerance",
        type=open_fraction,
        default=0.02,
        help="stop when the lowest failing rate is within this fraction above the highest sustained one",
    )


def run(args: argparse.Namespace) -> int:
    from pagedkv.outputs import IMAGE_SUFFIXES, check_output_file, write_json
    from pagedkv.plan.report import csv_rows, format_table, to_json, write_csv
    from pagedkv.plan.run import build_plan, run_plan
    from pagedkv.progress import Progress
    from pagedkv.runner import backend_from_args, task_map

    started = time.perf_counter()
    if not args.no_plot:
        check_output_file(args.out, "--out", IMAGE_SUFFIXES)
        _require_matplotlib()
    for flag in ("json", "csv"):
        if getattr(args, flag):
            check_output_file(getattr(args, flag), f"--{flag}")
    backend = backend_from_args(args)
    fixed = {dest: getattr(args, dest) for dest in _simulate_dests() if hasattr(args, dest)}
    num_requests = fixed.pop("num_requests", None)
    plan = build_plan(fixed, args.compare or [], args.slo or [], args.seeds, num_requests, args.tolerance)
    _refuse_if_all_impossible(plan)
    header = _header(args, plan, backend.describe())
    for name, text in header.items():
        print(f"{_LABELS.get(name, name) + ':':<11}{text}")
    with backend.session(), Progress(None, "pagedkv plan", "sim") as progress:
        results = run_plan(plan, task_map(backend), progress)
    print()
    print(format_table(plan, results))
    written = []
    if not args.no_plot:
        from pagedkv.plan.plot import draw_plan

        draw_plan(plan, results, args.out, f"pagedkv plan {header['options']}\n{header['workload']}")
        written.append(args.out)
    wall = time.perf_counter() - started
    if args.json:
        write_json(args.json, to_json(plan, results, {**header, "wall_seconds": round(wall, 2)}))
        written.append(args.json)
    if args.csv:
        write_csv(args.csv, csv_rows(plan, results))
        written.append(args.csv)
    print()
    for path in written:
        print(f"wrote {path}")
    print(f"({wall:.1f} s)")
    return 0


def _header(args: argparse.Namespace, plan: Plan, backend: str) -> dict[str, str]:
    """The lines printed before the table (and the JSON's description of the plan), by JSON key."""
    from pagedkv.plan.verdict import KEEP_UP_SHARE

    needed = max((slo.required_requests for slo in plan.slos), default=0)
    shared = plan.configurations[0].fixed
    fixed = " ".join(os.path.basename(a) if a == getattr(args, "trace", None) else a for a in shared)
    return {
        "options": fixed,
        "compared": " x ".join(args.compare or []) + f" ({len(plan.configurations)} configurations)"
        if args.compare
        else "one configuration",
        "workload": _workload(plan),
        "slos": ", ".join(slo.describe() for slo in plan.slos)
        or "none: sustains = keeps up with the arrivals",
        "sustains": (
            f"every SLO met over the middle 80 % of each stream's requests, pooled over seeds "
            f"{_seeds(plan.seeds)} ({plan.measured_requests:,} requests"
            + (f"; the tightest statistic needs {needed:,}" if needed else "")
            + f"), and a queue (requests without a first token) growing by at most {KEEP_UP_SHARE:.0%} "
            "of the arrivals"
        ),
        "search": (
            "from half the throughput at saturation: halve or double to a bracket, then bisect until the "
            f"lowest failing rate is within {plan.tolerance:.0%} of the highest sustained one"
        ),
        "backend": backend,
    }


def _workload(plan: Plan) -> str:
    """The first configuration's requests: the trace's lengths or the synthetic ones, and the stream."""
    from pagedkv.simulator.cli import parse_run_argv
    from pagedkv.simulator.workload import DEFAULT_OUTPUT_RANGE, DEFAULT_PROMPT_RANGE

    options = parse_run_argv(list(plan.configurations[0].argv))
    if options.trace is None:
        prompt = options.prompt_range or DEFAULT_PROMPT_RANGE
        output = options.output_range or DEFAULT_OUTPUT_RANGE
        lengths = f"synthetic lengths, prompt {prompt[0]}-{prompt[1]}, output {output[0]}-{output[1]} tokens"
    else:
        pool = plan.runs[0].requests
        order = (
            "consecutive from a seeded offset" if any(r.prefix_hash_ids for r in pool) else "a seeded sample"
        )
        lengths = f"the lengths of {os.path.basename(options.trace)} ({len(pool):,} requests), {order}"
    return f"{lengths}; {plan.num_requests:,} requests a seed, Poisson arrivals at each rate tried"


def _seeds(seeds: tuple[int, ...]) -> str:
    if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def _refuse_if_all_impossible(plan: Plan) -> None:
    from pagedkv.errors import UsageError
    from pagedkv.plan.run import impossible_reason

    reasons = [impossible_reason(plan, c.index) for c in plan.configurations]
    if all(reasons):
        raise UsageError(f"--slo {reasons[0]}; no rate can meet it")


def _require_matplotlib() -> None:
    import importlib.util

    from pagedkv.errors import UsageError

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--out: the plot needs matplotlib (pip install matplotlib), or pass --no-plot")


def _add_simulate_options(parser: argparse.ArgumentParser) -> None:
    """`pagedkv simulate`'s run options, the same for every configuration; only those given are kept
    (so a configuration's argv holds what the user typed and simulate derives the rest)."""
    from pagedkv.plan.configurations import PLANNER_OWNS
    from pagedkv.simulator.cli import add_run_arguments

    add_run_arguments(parser)
    dests = set(_simulate_dests())
    for action in parser._actions:
        if action.dest in dests:
            action.default = argparse.SUPPRESS
        if action.dest == "num_requests":
            action.help = (
                "requests in each seed's stream at every rate tried (default: enough for the SLOs' "
                "percentiles over the measured requests of all seeds, and at least 2,000)"
            )
        elif action.dest in PLANNER_OWNS:
            action.help = argparse.SUPPRESS  # refused, with the remedy, if given


def _simulate_dests() -> list[str]:
    from pagedkv.simulator.cli import add_run_arguments

    probe = argparse.ArgumentParser(add_help=False)
    add_run_arguments(probe)
    return list(vars(probe.parse_args([])))
