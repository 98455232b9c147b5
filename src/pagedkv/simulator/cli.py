"""`pagedkv simulate` (and `python simulate.py`): compare KV caches of equal memory on one workload.

Invariant: every cache in one invocation serves the identical request list with the same number of
KV token slots, and the output says how many; anything impossible is refused with a
`PagedKVError` (exit status 2 from `pagedkv.cli.main`), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from typing import Any, NoReturn

from pagedkv.simulator.cache import KVCache
from pagedkv.simulator.config import IterationTime, SimConfig
from pagedkv.simulator.loop import compare, standard_caches
from pagedkv.simulator.workload import Request

DEFAULT_ROWS = 32
DEFAULT_TRACE_MAX_SEQ_LEN = 8192
DEFAULT_OUT = "fragmentation.png"


_DESCRIPTION = (
    "Serve one request list (synthetic Poisson traffic or a trace) with several KV "
    "caches of equal memory, print where the memory goes, and plot it."
)


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="naive vs Orca vs paged KV caches on the same requests; writes fragmentation.png",
        description=_DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every `pagedkv simulate` option (shared with `run_point`, so a sweep axis is any of them)."""
    add_run_arguments(parser)
    output = parser.add_argument_group("output")
    output.add_argument("--out", default=DEFAULT_OUT, metavar="PATH", help="the plot (PNG)")
    output.add_argument("--no-plot", action="store_true", help="do not draw the plot")
    output.add_argument("--json", metavar="PATH", help="write every metric (summaries and per-step series)")
    output.add_argument(
        "--window",
        type=float,
        nargs=2,
        metavar=("START", "END"),
        help="average the per-step metrics over steps starting in [START, END) s (default: the whole run)",
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The workload, memory and engine options: what is simulated (`build_run` reads them), shared by
    every command that runs the simulator (simulate, watch, sweep)."""
    from pagedkv.simulator.config import DEFAULT_STEP_TIME_S
    from pagedkv.simulator.loop import CACHE_KINDS
    from pagedkv.simulator.workload import DEFAULT_OUTPUT_RANGE, DEFAULT_PROMPT_RANGE, DEFAULT_RATE

    work = parser.add_argument_group("workload")
    work.add_argument("--trace", metavar="PATH", help="trace file (Azure CSV, Mooncake JSONL, length CSV)")
    work.add_argument(
        "--format", choices=("azure", "mooncake", "lengths"), help="trace format (default: detect)"
    )
    work.add_argument(
        "--num-requests",
        type=int,
        help="requests to generate (default 1000), or trace rows to read (default all)",
    )
    work.add_argument(
        "--rate",
        type=float,
        help=f"Poisson arrivals in requests/s (default {DEFAULT_RATE:g}); with a timed trace, "
        "replaces its timestamps",
    )
    work.add_argument("--seed", type=int, default=0, help="seeds arrivals, lengths and the beam model")
    work.add_argument("--prompt-range", type=int, nargs=2, metavar=("LO", "HI"), default=DEFAULT_PROMPT_RANGE)
    work.add_argument("--output-range", type=int, nargs=2, metavar=("LO", "HI"), default=DEFAULT_OUTPUT_RANGE)
    work.add_argument(
        "--max-seq-len",
        type=int,
        help="longest sequence (prompt + output); the naive row size and Orca's cap. Default: the "
        f"synthetic maximum (prompt HI + output HI), or {DEFAULT_TRACE_MAX_SEQ_LEN} for traces",
    )
    work.add_argument(
        "--on-too-long", choices=("truncate", "drop"), default="truncate", help="requests over --max-seq-len"
    )
    work.add_argument("--n", type=int, default=1, help="parallel sampling: outputs per prompt")
    work.add_argument("--beam-width", type=int, default=1, help="beam search width")
    work.add_argument(
        "--beam-prune-prob", type=float, default=0.1, help="beam model: chance a beam is replaced each step"
    )

    memory = parser.add_argument_group("memory (equal for every cache)")
    size = memory.add_mutually_exclusive_group()
    size.add_argument(
        "--rows",
        type=int,
        default=DEFAULT_ROWS,
        help="KV slots = ROWS x max-seq-len (the naive arena's rows)",
    )
    size.add_argument("--kv-slots", type=int, help="KV token slots per cache")
    size.add_argument("--num-blocks", type=int, help="KV slots = NUM_BLOCKS x block size (the paged pool)")
    memory.add_argument(
        "--caches", default=",".join(CACHE_KINDS), help=f"comma-separated, from {', '.join(CACHE_KINDS)}"
    )
    memory.add_argument("--block-size", type=int, default=16, help="paged block size (tokens)")
    memory.add_argument(
        "--orca-block-size", type=int, default=16, help="Orca reservation granularity (tokens)"
    )
    memory.add_argument("--prefix-caching", action="store_true", help="paged: enable prefix caching")
    memory.add_argument(
        "--watermark", type=float, default=0.01, help="paged: pool fraction kept free at admission"
    )
    memory.add_argument("--preemption", choices=("recompute", "swap"), default="recompute", help="paged")
    memory.add_argument("--swap-slots", type=int, help="paged: CPU swap pool in token slots (default: = GPU)")

    engine = parser.add_argument_group("engine")
    engine.add_argument(
        "--step-time", type=float, default=DEFAULT_STEP_TIME_S, help="seconds per engine step"
    )
    engine.add_argument(
        "--step-time-per-seq", type=float, default=0.0, help="extra seconds per running sequence"
    )
    engine.add_argument(
        "--step-time-per-prefill-token", type=float, default=0.0, help="extra seconds per prefilled token"
    )
    engine.add_argument(
        "--step-time-per-context-token", type=float, default=0.0, help="extra seconds per token attended over"
    )
    engine.add_argument("--max-num-seqs", type=int, help="most sequences running at once (default: no limit)")
    engine.add_argument("--max-time", type=float, help="stop at this simulated time (s)")
    engine.add_argument("--check", action="store_true", help="verify cache invariants every step (slow)")


@dataclass(frozen=True)
class Run:
    """One simulation as the options describe it: the identical requests for every cache, and the caches."""

    requests: list[Request]
    caches: list[KVCache]
    config: SimConfig
    workload: str  # one line: what was loaded or generated, cut or dropped
    memory: str  # one line: the KV slots every cache gets and how each lays them out


def run_point(argv: list[str]) -> list[dict[str, Any]]:
    """Run `pagedkv simulate ARGV` quietly (no plot, no files, no output) and return one flat row per
    cache: every option under its flag's name (``rate``, ``block_size``, ...), ``cache``, and every
    number of `SimResult.summary()` (counters included). Bad options raise `PagedKVError`.
    """
    parser = _QuietParser(prog="pagedkv simulate", description=_DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("out", "no_plot", "json", "check")}
    built = build_run(args)
    results = compare(built.requests, built.caches, built.config)
    window = tuple(args.window) if args.window else None
    rows = []
    for name, result in results.items():
        row: dict[str, Any] = {key: _scalar(value) for key, value in options.items()}
        summary = result.summary(window)
        row.update({key: _scalar(value) for key, value in summary.items()})
        row["cache"] = name
        rows.append(row)
    return rows


class _QuietParser(argparse.ArgumentParser):
    """Raises `UsageError` instead of printing usage and exiting (for library callers)."""

    def error(self, message: str) -> NoReturn:
        from pagedkv.errors import UsageError

        raise UsageError(message)


def _scalar(value: Any) -> Any:
    """Lists (ranges, windows) become a string so each row stays flat (CSV and Parquet ready)."""
    return " ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value


def run(args: argparse.Namespace) -> int:
    from pagedkv.progress import Progress
    from pagedkv.simulator.report import format_table

    started = time.perf_counter()
    _check_writable(None if args.no_plot else args.out, "--out")
    _check_writable(args.json, "--json")
    built = build_run(args)
    print(f"workload: {built.workload}")
    print(f"memory:   {built.memory}")
    print(f"engine:   {built.config.iteration_time.describe()}; {_sampling(built.config)}")
    with Progress(len(built.caches) * len(built.requests), "simulating", "req") as progress:
        results = compare(built.requests, built.caches, built.config, progress=progress)
    workload, memory = built.workload, built.memory
    print()
    window = tuple(args.window) if args.window else None
    print(format_table(results, window))
    if not args.no_plot:
        from pagedkv.simulator.plot import plot_comparison

        plot_comparison(results, args.out, subtitle=workload, window=window)
        print(f"\nwrote {args.out}")
    if args.json:
        _write_json(args, results, workload, memory)
        print(f"wrote {args.json}")
    print(f"({time.perf_counter() - started:.1f} s)")
    return 0


def build_run(args: argparse.Namespace) -> Run:
    """The requests, caches and settings the options of `add_run_arguments` describe."""
    max_seq_len = _max_seq_len(args)
    requests, workload = _workload(args, max_seq_len)
    kv_slots = _kv_slots(args, max_seq_len)
    config = SimConfig(
        iteration_time=IterationTime(
            args.step_time,
            args.step_time_per_seq,
            args.step_time_per_prefill_token,
            args.step_time_per_context_token,
        ),
        n=args.n,
        beam_width=args.beam_width,
        beam_prune_prob=args.beam_prune_prob,
        seed=args.seed,
        max_num_seqs=args.max_num_seqs,
        max_time=args.max_time,
        check_invariants=args.check,
    )
    caches = standard_caches(
        kv_slots,
        max_seq_len,
        kinds=[kind.strip() for kind in args.caches.split(",") if kind.strip()],
        block_size=args.block_size,
        orca_block_size=args.orca_block_size,
        enable_prefix_caching=args.prefix_caching,
        watermark=args.watermark,
        preemption=args.preemption,
        swap_slots=args.swap_slots,
    )
    memory = f"{kv_slots:,} KV token slots for every cache: " + "; ".join(
        f"{cache.name} {cache.describe()}" for cache in caches
    )
    return Run(requests, caches, config, workload, memory)


def _check_writable(path: str | None, option: str) -> None:
    """Refuse an output path in a missing directory before spending time on the simulation."""
    from pagedkv.simulator.config import SimulationConfigError

    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise SimulationConfigError(
            f"{option} {path}: the directory {folder} does not exist; create it first"
        )


def _max_seq_len(args: argparse.Namespace) -> int:
    from pagedkv.simulator.config import SimulationConfigError

    if args.max_seq_len is not None:
        value = args.max_seq_len
    elif args.trace:
        value = DEFAULT_TRACE_MAX_SEQ_LEN
    else:
        value = args.prompt_range[1] + args.output_range[1]
    if value < 2:
        raise SimulationConfigError(
            f"--max-seq-len {value}: a sequence needs at least one prompt and one output token; use >= 2"
        )
    return value


def _workload(args: argparse.Namespace, max_seq_len: int) -> tuple[list[Any], str]:
    """The request list and one line describing it (what was loaded, generated, cut or dropped)."""
    from pagedkv.simulator.traces import load_trace
    from pagedkv.simulator.workload import DEFAULT_RATE, synthetic_workload, with_poisson_arrivals

    rate = DEFAULT_RATE if args.rate is None else args.rate
    if args.trace:
        trace = load_trace(
            args.trace,
            fmt=args.format,
            max_seq_len=max_seq_len,
            on_too_long=args.on_too_long,
            limit=args.num_requests,
        )
        if trace.timed and args.rate is None:
            return trace.requests, trace.describe()
        return (
            with_poisson_arrivals(trace.requests, rate, args.seed),
            f"{trace.describe()}; Poisson arrivals at {rate:g} req/s (seed {args.seed})",
        )
    num = 1000 if args.num_requests is None else args.num_requests
    requests = synthetic_workload(num, rate, tuple(args.prompt_range), tuple(args.output_range), args.seed)
    fitted, changed = _fit(requests, max_seq_len, args.on_too_long)
    lo_p, hi_p = args.prompt_range
    lo_o, hi_o = args.output_range
    note = (
        f"; {changed:,} {'dropped' if args.on_too_long == 'drop' else 'truncated'} to --max-seq-len"
        if changed
        else ""
    )
    return fitted, (
        f"{len(fitted):,} synthetic requests: Poisson {rate:g} req/s, prompt {lo_p}-{hi_p}, "
        f"output {lo_o}-{hi_o} tokens, seed {args.seed}{note}"
    )


def _fit(requests: list[Any], max_seq_len: int, on_too_long: str) -> tuple[list[Any], int]:
    """Apply the trace loaders' max-length policy to synthetic requests (keep the output, cut the prompt)."""
    from dataclasses import replace

    from pagedkv.simulator.config import SimulationConfigError

    kept, changed = [], 0
    for request in requests:
        if request.total_len <= max_seq_len:
            kept.append(request)
            continue
        changed += 1
        if on_too_long == "truncate":
            output = min(request.output_len, max_seq_len - 1)
            kept.append(replace(request, prompt_len=max_seq_len - output, output_len=output))
    if not kept:
        raise SimulationConfigError(
            f"all {len(requests):,} requests are longer than --max-seq-len {max_seq_len}; "
            "raise it or use --on-too-long truncate"
        )
    return [replace(r, request_id=i) for i, r in enumerate(kept)] if len(kept) < len(
        requests
    ) else kept, changed


def _kv_slots(args: argparse.Namespace, max_seq_len: int) -> int:
    from pagedkv.simulator.config import SimulationConfigError

    if args.kv_slots is not None:
        slots, what = args.kv_slots, f"--kv-slots {args.kv_slots}"
    elif args.num_blocks is not None:
        slots, what = args.num_blocks * args.block_size, f"--num-blocks {args.num_blocks}"
    else:
        slots, what = args.rows * max_seq_len, f"--rows {args.rows}"
    if slots < 1:
        raise SimulationConfigError(f"{what} gives {slots} KV slots; the caches need at least one")
    return slots


def _sampling(config: Any) -> str:
    if config.beam_search:
        return f"beam search, width {config.beam_width}, prune probability {config.beam_prune_prob:g} a step"
    if config.n > 1:
        return f"parallel sampling, n = {config.n}"
    return "one output per prompt"


def _write_json(args: argparse.Namespace, results: dict[str, Any], workload: str, memory: str) -> None:
    from pagedkv.simulator.config import SimulationConfigError

    document = {
        "options": {k: v for k, v in vars(args).items() if k != "func"},
        "workload": workload,
        "memory": memory,
        "capacity_slots": next(iter(results.values())).capacity_slots,
        "caches": {name: result.to_dict() for name, result in results.items()},
    }
    try:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
    except OSError as exc:
        raise SimulationConfigError(f"--json {args.json}: cannot write: {exc.strerror or exc}") from exc
