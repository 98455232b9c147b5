"""`pagedkv simulate` (and `python simulate.py`): compare KV caches of equal memory on one workload.

Invariant: every cache in one invocation serves the identical request list with the same number of
KV token slots, and the output says how many. Every option is checked before the simulation starts:
a bad value, an option that cannot apply to the others, an output path that cannot be written or a
size this machine cannot hold is one line naming the flag (exit 2), never a traceback or a wasted run.
Outputs are written atomically.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import time
from dataclasses import dataclass, replace
from typing import Any

from pagedkv.errors import InvalidArgument, UsageError
from pagedkv.memory import require_memory
from pagedkv.options import (
    Formatter,
    Parser,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    utilization,
)
from pagedkv.outputs import IMAGE_SUFFIXES, atomic_path, check_output_file, write_json
from pagedkv.simulator.cache import KVCache
from pagedkv.simulator.config import (
    DEFAULT_STEP_TIME_S,
    SCHEDULERS,
    SimConfig,
    SimulationConfigError,
    StepTime,
    StepTimeModel,
    describe_time_model,
)
from pagedkv.simulator.deployment import Deployment
from pagedkv.simulator.gpu import GpuSpec
from pagedkv.simulator.gpu import catalogue as gpu_catalogue
from pagedkv.simulator.loop import CACHE_KINDS, check_budget, compare, standard_caches
from pagedkv.simulator.metrics import SimResult
from pagedkv.simulator.model_config import KV_CACHE_DTYPES, ModelConfig
from pagedkv.simulator.model_config import catalogue as model_catalogue
from pagedkv.simulator.option_error import OptionError
from pagedkv.simulator.workload import (
    DEFAULT_OUTPUT_RANGE,
    DEFAULT_PROMPT_RANGE,
    DEFAULT_RATE,
    Request,
    synthetic_workload,
    with_poisson_arrivals,
)

DEFAULT_ROWS = 32
DEFAULT_NUM_REQUESTS = 1000
DEFAULT_TRACE_MAX_SEQ_LEN = 8192
DEFAULT_OUT = "fragmentation.png"
DEFAULT_MAX_NUM_SEQS_WITH_BUDGET = 256  # vLLM's default max_num_seqs
DEFAULT_GPU = "H100-80GB"
DEFAULT_SWAP_SPACE_GIB = 4.0  # vLLM's --swap-space default
# Measured with tracemalloc on CPython 3.11 (see benchmarks/bench_block_manager.py): what one unit
# of each size option costs; used only to refuse sizes this machine cannot hold.
_BYTES_PER_BLOCK = {False: 24, True: 128}  # paged pool, prefix caching off / on (peak, ids kept)
_BYTES_PER_REQUEST = 400
_BYTES_PER_TOKEN_ID = 36

_DESCRIPTION = (
    "Serve one request list (synthetic Poisson traffic or a trace) with several KV caches of equal "
    "memory, print where the memory goes and what latency users see, and plot it."
)


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="naive vs Orca vs paged KV caches on the same requests; writes fragmentation.png",
        description=_DESCRIPTION,
        formatter_class=Formatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every `pagedkv simulate` option (shared with `run_point`, so a sweep axis is any of them)."""
    add_run_arguments(parser)
    output = parser.add_argument_group("output")
    output.add_argument("--out", default=DEFAULT_OUT, metavar="PATH", help="the plot (.png, .svg or .pdf)")
    output.add_argument("--no-plot", action="store_true", help="do not draw the plot")
    output.add_argument(
        "--json", metavar="PATH", help="write every metric: summaries, per-request results, per-step series"
    )
    output.add_argument("--csv", metavar="PATH", help="write one row per request and cache (latencies)")
    output.add_argument(
        "--window",
        type=non_negative_float,
        nargs=2,
        metavar=("START", "END"),
        help="average the per-step metrics over steps starting in [START, END) s (default: the whole run)",
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The workload, memory and engine options: what is simulated (`build_run` reads them), shared by
    every command that runs the simulator (simulate, watch, sweep)."""
    work = parser.add_argument_group("workload")
    work.add_argument("--trace", metavar="PATH", help="trace file (Azure CSV, Mooncake JSONL, length CSV)")
    work.add_argument(
        "--format", choices=("azure", "mooncake", "lengths"), help="trace format (default: detected)"
    )
    work.add_argument(
        "--num-requests",
        type=positive_int,
        help=f"requests to generate (default {DEFAULT_NUM_REQUESTS:,}), or trace rows to read (default all); "
        "more than a length-only trace has repeats its lengths",
    )
    work.add_argument(
        "--rate",
        type=positive_float,
        help=f"Poisson arrivals in requests/s (default {DEFAULT_RATE:g}); with a timed trace, "
        "replaces its timestamps",
    )
    work.add_argument(
        "--seed", type=non_negative_int, default=0, help="seeds arrivals, lengths and the beam model"
    )
    work.add_argument(
        "--prompt-range",
        type=positive_int,
        nargs=2,
        metavar=("LO", "HI"),
        help="synthetic prompt lengths, uniform (default {} {})".format(*DEFAULT_PROMPT_RANGE),
    )
    work.add_argument(
        "--output-range",
        type=positive_int,
        nargs=2,
        metavar=("LO", "HI"),
        help="synthetic output lengths, uniform (default {} {})".format(*DEFAULT_OUTPUT_RANGE),
    )
    work.add_argument(
        "--max-model-len",
        "--max-seq-len",
        dest="max_model_len",
        type=positive_int,
        help="longest sequence (prompt + output); the naive row size and Orca's cap. Default: the "
        f"synthetic maximum (prompt HI + output HI), or {DEFAULT_TRACE_MAX_SEQ_LEN} for traces",
    )
    work.add_argument(
        "--on-too-long",
        choices=("truncate", "drop"),
        default="truncate",
        help="requests over --max-model-len",
    )
    work.add_argument("-n", "--n", type=positive_int, default=1, help="parallel sampling: outputs per prompt")
    work.add_argument("--beam-width", type=positive_int, default=1, help="beam search width")
    work.add_argument(
        "--beam-prune-prob",
        type=probability,
        help="beam model: chance a beam is replaced by a fork of another each step (default 0.1)",
    )

    served = parser.add_argument_group(
        "model and hardware (vLLM's options: KV blocks, token budget and step time as vLLM computes them)"
    )
    served.add_argument(
        "--model",
        metavar="NAME|PATH",
        help=f"a catalogue model ({', '.join(model_catalogue())}), a config.json or a checkpoint folder",
    )
    served.add_argument(
        "--gpu",
        metavar="NAME",
        help=f"with --model: one of {', '.join(gpu_catalogue())} (default {DEFAULT_GPU}), or none and "
        "the three --gpu-* numbers",
    )
    served.add_argument("--gpu-memory-gib", type=positive_float, help="GPU memory (replaces the catalogue's)")
    served.add_argument("--gpu-hbm-gbps", type=positive_float, help="GPU memory bandwidth in GB/s")
    served.add_argument("--gpu-tflops", type=positive_float, help="GPU dense 16-bit TFLOP/s")
    served.add_argument(
        "--gpu-link-gbps",
        type=positive_float,
        help="GPU-to-GPU bandwidth in GB/s each way (what tensor parallelism's all-reduces use)",
    )
    served.add_argument(
        "--tensor-parallel-size", "-tp", type=positive_int, help="GPUs the model is split across (default 1)"
    )
    served.add_argument(
        "--gpu-memory-utilization", type=utilization, help="share of GPU memory vLLM may use (default 0.9)"
    )
    served.add_argument(
        "--kv-cache-dtype", choices=tuple(KV_CACHE_DTYPES), help="KV precision (default auto: the model's)"
    )
    served.add_argument(
        "--kv-cache-memory", type=positive_int, metavar="BYTES", help="KV cache bytes per GPU (no profiling)"
    )
    served.add_argument(
        "--swap-space",
        type=non_negative_float,
        metavar="GIB",
        help=f"CPU swap space per GPU with --preemption-mode swap (default {DEFAULT_SWAP_SPACE_GIB:g})",
    )

    memory = parser.add_argument_group("memory (equal for every cache)")
    size = memory.add_mutually_exclusive_group()
    size.add_argument(
        "--rows",
        type=positive_int,
        help=f"KV slots = ROWS x max-model-len, the naive arena's rows (default {DEFAULT_ROWS})",
    )
    size.add_argument("--kv-slots", type=positive_int, help="KV token slots per cache")
    size.add_argument(
        "--num-blocks", type=positive_int, help="KV slots = NUM_BLOCKS x block size (the paged pool)"
    )
    memory.add_argument(
        "--caches",
        help=f"comma-separated, from {', '.join(CACHE_KINDS)} (default: all; paged with --model)",
    )
    memory.add_argument("--block-size", type=positive_int, help="paged block size in tokens (default 16)")
    memory.add_argument(
        "--orca-block-size", type=positive_int, help="Orca reservation granularity in tokens (default 16)"
    )
    memory.add_argument(
        "--enable-prefix-caching",
        "--prefix-caching",
        dest="enable_prefix_caching",
        action="store_true",
        help="paged: reuse cached prompt blocks (needs a trace with prefix ids, e.g. Mooncake)",
    )
    memory.add_argument(
        "--watermark", type=fraction, help="paged: pool fraction kept free at admission (default 0.01)"
    )
    memory.add_argument(
        "--preemption-mode",
        "--preemption",
        dest="preemption_mode",
        choices=("recompute", "swap"),
        help="paged: what a preempted request does (default recompute)",
    )
    memory.add_argument(
        "--swap-slots",
        type=non_negative_int,
        help="CPU swap pool in token slots with --preemption-mode swap (default: as large as the GPU pool)",
    )

    engine = parser.add_argument_group("engine")
    engine.add_argument(
        "--step-time",
        type=positive_float,
        help=f"seconds per engine step (default {DEFAULT_STEP_TIME_S:g}; with --model: the roofline, "
        "unless these four are given)",
    )
    engine.add_argument(
        "--step-time-per-seq", type=non_negative_float, help="extra seconds per running sequence (default 0)"
    )
    engine.add_argument(
        "--step-time-per-prefill-token",
        type=non_negative_float,
        help="extra seconds per prompt token computed (default 0)",
    )
    engine.add_argument(
        "--step-time-per-context-token",
        type=non_negative_float,
        help="extra seconds per token attended over (default 0)",
    )
    engine.add_argument(
        "--max-num-seqs",
        type=positive_int,
        help="most sequences running at once (default: no limit, or "
        f"{DEFAULT_MAX_NUM_SEQS_WITH_BUDGET} with --max-num-batched-tokens; with --model, vLLM's default)",
    )
    engine.add_argument(
        "--max-num-batched-tokens",
        type=positive_int,
        help="token budget of one step, decodes and prompt tokens together (default: no budget, every "
        "admitted prompt prefilled whole in the step that admits it; with --model, vLLM's default)",
    )
    engine.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default="v1",
        help="v1: decodes and prefills share each step; v0: separate prefill steps stall decodes",
    )
    engine.add_argument(
        "--enable-chunked-prefill",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="v1 with a token budget: split prompts over steps (default: on)",
    )
    engine.add_argument("--max-time", type=positive_float, help="stop at this simulated time (s)")
    engine.add_argument("--check", action="store_true", help="verify cache invariants every step (slow)")


@dataclass(frozen=True)
class Run:
    """One simulation as the options describe it: the identical requests for every cache, and the caches."""

    requests: list[Request]
    caches: list[KVCache]
    config: SimConfig
    workload: str  # one line: what was loaded or generated, cut or dropped
    memory: str  # one line: the KV slots every cache gets and how each lays them out
    notes: tuple[str, ...] = ()  # options that had no effect on this workload, and why
    deployment: str = ""  # with --model: the model, GPUs, every term of the KV sum, the step time


def run(args: argparse.Namespace) -> int:
    from pagedkv.progress import Progress
    from pagedkv.simulator.report import format_table

    started = time.perf_counter()
    if not args.no_plot:
        check_output_file(args.out, "--out", IMAGE_SUFFIXES)
    for flag in ("json", "csv"):
        if getattr(args, flag):
            check_output_file(getattr(args, flag), f"--{flag}")
    window = _window(args)
    if not args.no_plot:
        _require_matplotlib()
    built = build_run(args)
    if built.deployment:
        print(built.deployment)
    print(f"workload:  {built.workload}")
    print(f"memory:    {built.memory}")
    step_time = describe_time_model(built.config.step_time).splitlines()[0]
    print(f"engine:    {step_time}; {_sampling(built.config)}")
    print(f"scheduler: {built.config.describe_scheduler()}")
    for note in built.notes:
        print(f"note:      {note}")
    with Progress(len(built.caches) * len(built.requests), "simulating", "req") as progress:
        results = compare(
            built.requests,
            built.caches,
            built.config,
            progress=progress,
            keep_series=bool(args.json),
            window=window,
        )
    print()
    try:
        print(format_table(results, window))
    except OptionError as exc:  # a --window past the end of the run: known only once it has run
        raise UsageError(exc.flag_message(" ".join(f"{v:g}" for v in args.window))) from None
    written = []
    if not args.no_plot:
        from pagedkv.simulator.plot import plot_comparison

        plot_comparison(results, args.out, subtitle=built.workload, window=window)
        written.append(args.out)
    if args.json:
        _write_json(args, results, built)
        written.append(args.json)
    if args.csv:
        _write_csv(args.csv, built.requests, results)
        written.append(args.csv)
    print()
    for path in written:
        print(f"wrote {path}")
    print(f"({time.perf_counter() - started:.1f} s)")
    return 0


def run_point(argv: list[str]) -> list[dict[str, Any]]:
    """Run `pagedkv simulate ARGV` quietly (no plot, no files, no output) and return one flat row per
    cache: every option under its flag's name (``rate``, ``block_size``, ...), ``cache``, and every
    number of `SimResult.summary()` (counters included). Bad options raise `UsageError`.
    """
    args = parse_run_argv(argv)
    window = _window(args)
    built = build_run(args)
    options = resolved_options(args, built)
    results = compare(built.requests, built.caches, built.config, keep_series=False, window=window)
    rows = []
    for name, result in results.items():
        row: dict[str, Any] = {key: _scalar(value) for key, value in options.items()}
        row.update({key: _scalar(value) for key, value in result.summary(window).items()})
        row["cache"] = name
        rows.append(row)
    return rows


def parse_run_argv(argv: list[str]) -> argparse.Namespace:
    """``pagedkv simulate ARGV`` parsed as `build_run` reads it (library callers: the sweep's points, the
    planner's configurations); a bad option raises `UsageError` naming it, nothing is printed."""
    parser = _QuietParser(prog="pagedkv simulate", description=_DESCRIPTION)
    add_arguments(parser)
    return parser.parse_args(argv)


class _QuietParser(Parser):
    """Raises `UsageError` instead of printing and exiting (for library callers)."""

    def error(self, message: str) -> Any:
        raise UsageError(message)


def resolved_options(args: argparse.Namespace, built: Run) -> dict[str, Any]:
    """The options as the run used them: defaults that depend on other options filled in."""
    options = {k: v for k, v in vars(args).items() if k not in ("out", "no_plot", "json", "csv", "check")}
    config = built.config
    options["max_model_len"] = _max_seq_len(args)
    options["kv_slots"] = built.caches[0].capacity_slots
    options["max_num_seqs"] = config.max_num_seqs
    options["enable_chunked_prefill"] = config.chunked_prefill
    options["beam_prune_prob"] = config.beam_prune_prob
    if args.trace is None:
        options["num_requests"] = len(built.requests)
        options["rate"] = DEFAULT_RATE if args.rate is None else args.rate
        options["prompt_range"] = _range(args, "prompt_range")
        options["output_range"] = _range(args, "output_range")
    paged = "paged" in _cache_kinds(args)
    for name, default in (("block_size", 16), ("watermark", 0.01), ("preemption_mode", "recompute")):
        if options[name] is None and paged:
            options[name] = default
    return options


def _scalar(value: Any) -> Any:
    """Lists (ranges, windows) become a string so each row stays flat (CSV and Parquet ready)."""
    return " ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value


def build_run(args: argparse.Namespace, *, block_tables: bool = False) -> Run:
    """The requests, caches and settings the options of `add_run_arguments` describe, every option
    checked first (`UsageError` naming the flag). `block_tables`: the paged cache keeps every block
    table (a `PagedCache`) even when block counts would give the same results faster."""
    kinds = _cache_kinds(args)
    notes = _check_applicable(args, kinds)
    deployment = _deployment(args) if args.model is not None else None
    max_seq_len = _max_seq_len(args, deployment)
    kv_slots = deployment.kv_slots if deployment is not None else _kv_slots(args, max_seq_len)
    _check_sizes(args, kinds, kv_slots, max_seq_len)
    config = _config(args, deployment)
    requests, workload = _workload(args, max_seq_len)
    if args.enable_prefix_caching and not any(r.prefix_hash_ids for r in requests):
        notes.append(
            "--enable-prefix-caching: this workload says nothing of shared prefixes (only Mooncake traces "
            "carry prefix ids), so every prompt is unique and the hit rate is 0 by construction"
        )
    caches = standard_caches(
        kv_slots,
        max_seq_len,
        kinds=kinds,
        block_size=args.block_size or 16,
        orca_block_size=args.orca_block_size or 16,
        num_seqs=config.num_seqs,
        block_tables=block_tables,
        enable_prefix_caching=args.enable_prefix_caching,
        watermark=0.01 if args.watermark is None else args.watermark,
        preemption=args.preemption_mode or "recompute",
        swap_slots=_swap_slots(args, deployment),
    )
    _check_fits(requests, caches, config)
    try:
        check_budget(requests, config)
    except SimulationConfigError as exc:
        raise UsageError(f"--max-num-batched-tokens {config.max_num_batched_tokens:,}: {exc}") from None
    memory = f"{kv_slots:,} KV token slots for every cache: " + "; ".join(
        f"{cache.name} {cache.describe()}" for cache in caches
    )
    if deployment is not None and deployment.model.sliding_window is not None:
        notes.append(
            f"{deployment.model.name} attends over a sliding window of {deployment.model.sliding_window:,} "
            "tokens, so vLLM stops growing a sequence's KV there; the caches here keep every token's KV "
            "(an overestimate of KV use for longer sequences)"
        )
    text = _describe_deployment(deployment, config) if deployment is not None else ""
    return Run(requests, caches, config, workload, memory, tuple(notes), text)


def _deployment(args: argparse.Namespace) -> Deployment:
    """The model on its GPUs with vLLM's memory options, every error naming the flag."""
    try:
        model = ModelConfig.from_pretrained(args.model)
    except InvalidArgument as exc:
        raise UsageError(f"--model {args.model}: {exc}") from None
    try:
        return Deployment(
            model,
            _gpu(args),
            tensor_parallel_size=args.tensor_parallel_size or 1,
            gpu_memory_utilization=0.9
            if args.gpu_memory_utilization is None
            else args.gpu_memory_utilization,
            kv_cache_dtype=args.kv_cache_dtype or "auto",
            block_size=args.block_size or 16,
            max_num_batched_tokens=args.max_num_batched_tokens,
            max_num_seqs=args.max_num_seqs,
            kv_cache_memory_bytes=args.kv_cache_memory,
        )
    except OptionError as exc:
        typed = getattr(args, exc.option, None)
        raise UsageError(exc.flag_message(None if typed is None else str(typed))) from None


def _gpu(args: argparse.Namespace) -> GpuSpec:
    """The named GPU with any number given on the command line replacing the catalogue's, or a GPU
    given entirely by its numbers."""
    numbers = {
        "memory_gib": args.gpu_memory_gib,
        "hbm_gb_per_s": args.gpu_hbm_gbps,
        "bf16_tflops": args.gpu_tflops,
    }
    given = {name: value for name, value in numbers.items() if value is not None}
    if args.gpu is None and given:
        if len(given) < len(numbers):
            raise UsageError(
                "a GPU given by its numbers needs all of --gpu-memory-gib, --gpu-hbm-gbps and --gpu-tflops "
                "(or name one with --gpu)"
            )
        if args.gpu_link_gbps is None and (args.tensor_parallel_size or 1) > 1:
            raise UsageError(
                f"--tensor-parallel-size {args.tensor_parallel_size}: a GPU given by its numbers needs "
                "--gpu-link-gbps (its GPU-to-GPU bandwidth) for the all-reduces"
            )
        gpu = GpuSpec("custom GPU", source="given on the command line", **given)
    else:
        try:
            gpu = GpuSpec.from_name(args.gpu or DEFAULT_GPU)
        except InvalidArgument as exc:
            raise UsageError(f"--gpu {args.gpu}: {exc}") from None
        if given or args.gpu_link_gbps is not None:
            gpu = dataclasses.replace(gpu, source=f"{gpu.source}; overridden on the command line", **given)
    if args.gpu_link_gbps is not None:
        gpu = dataclasses.replace(gpu, link_gb_per_s=args.gpu_link_gbps, link="given on the command line")
    return gpu


def _swap_slots(args: argparse.Namespace, deployment: Deployment | None) -> int | None:
    if deployment is None or args.preemption_mode != "swap":
        return args.swap_slots
    space = DEFAULT_SWAP_SPACE_GIB if args.swap_space is None else args.swap_space
    return deployment.num_cpu_blocks(space) * deployment.block_size


def _describe_deployment(deployment: Deployment, config: SimConfig) -> str:
    lines = [f"model:     {deployment.describe()}", "KV memory per GPU:"]
    lines += [f"  {line}" for line in deployment.memory_terms().format().splitlines()]
    lines.append("step time, every coefficient:")
    lines += [f"  {line}" for line in describe_time_model(config.step_time).splitlines()[1:]]
    return "\n".join(lines)


def _check_fits(requests: list[Request], caches: list[KVCache], config: SimConfig) -> None:
    """Refuse, before the run, a request that no cache could ever hold (`simulate` checks it again)."""
    shapes = {(r.prompt_len, r.output_len): r for r in requests}  # the check depends on lengths alone
    for cache in caches:
        for request in shapes.values():
            cache.check_fits(request, config.num_seqs)


def _cache_kinds(args: argparse.Namespace) -> list[str]:
    if args.caches is None:
        return ["paged"] if args.model is not None else list(CACHE_KINDS)
    kinds = [kind.strip() for kind in args.caches.split(",") if kind.strip()]
    if not kinds:
        raise UsageError(f"--caches {args.caches!r}: name at least one of {', '.join(CACHE_KINDS)}")
    unknown = [kind for kind in kinds if kind not in CACHE_KINDS]
    if unknown:
        raise UsageError(f"--caches: unknown cache {unknown[0]!r}; choose from {', '.join(CACHE_KINDS)}")
    if len(set(kinds)) != len(kinds):
        raise UsageError(f"--caches {args.caches!r}: each cache once")
    return kinds


def _check_applicable(args: argparse.Namespace, kinds: list[str]) -> list[str]:
    """Refuse options that cannot apply to the others; return notes on options that had no effect."""
    if args.trace is None:
        if args.format is not None:
            raise UsageError("--format applies to --trace files; there is no --trace")
    else:
        for flag in ("prompt_range", "output_range"):
            if getattr(args, flag) is not None:
                raise UsageError(
                    f"--{flag.replace('_', '-')} sets synthetic lengths; with --trace the lengths are the "
                    "trace's (use --max-model-len to cut long ones)"
                )
    if args.model is None:
        for flag in (
            "gpu",
            "gpu_memory_gib",
            "gpu_hbm_gbps",
            "gpu_tflops",
            "gpu_link_gbps",
            "tensor_parallel_size",
            "gpu_memory_utilization",
            "kv_cache_dtype",
            "kv_cache_memory",
            "swap_space",
        ):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} describes the --model's hardware; add --model")
    else:
        for flag in ("rows", "kv_slots", "num_blocks"):
            if getattr(args, flag) is not None:
                raise UsageError(
                    f"--{flag.replace('_', '-')}: with --model the model and GPUs fix the KV memory; use "
                    "--gpu-memory-utilization or --kv-cache-memory"
                )
        if args.swap_slots is not None:
            raise UsageError("--swap-slots: with --model the swap pool is --swap-space GiB a GPU")
    if args.swap_space is not None and args.preemption_mode != "swap":
        raise UsageError("--swap-space sizes the swap pool of --preemption-mode swap; add it or drop it")
    paged = "paged" in kinds
    for flag in ("block_size", "watermark", "preemption_mode", "swap_slots"):
        if getattr(args, flag) is not None and not paged:
            raise UsageError(f"--{flag.replace('_', '-')} applies to the paged cache; --caches has none")
    if args.enable_prefix_caching and not paged:
        raise UsageError("--enable-prefix-caching applies to the paged cache; --caches has none")
    if args.orca_block_size is not None and not any(kind.startswith("orca") for kind in kinds):
        raise UsageError("--orca-block-size applies to the Orca caches; --caches has none")
    if args.swap_slots is not None and args.preemption_mode != "swap":
        raise UsageError(
            "--swap-slots sizes the swap pool of --preemption-mode swap; add it or drop --swap-slots"
        )
    if args.beam_prune_prob is not None and args.beam_width == 1:
        raise UsageError("--beam-prune-prob applies to beam search; add --beam-width K (K > 1)")
    if args.n > 1 and args.beam_width > 1:
        raise UsageError(f"--n {args.n} and --beam-width {args.beam_width}: choose sampling or beam search")
    if args.enable_chunked_prefill and args.scheduler == "v0":
        raise UsageError(
            "--enable-chunked-prefill: the v0 scheduler never chunks prompts; use --scheduler v1"
        )
    notes = []
    if args.enable_chunked_prefill is not None and args.max_num_batched_tokens is None:
        notes.append("--enable-chunked-prefill has no effect without --max-num-batched-tokens (no budget)")
    return notes


def _config(args: argparse.Namespace, deployment: Deployment | None) -> SimConfig:
    budget = args.max_num_batched_tokens
    max_num_seqs = args.max_num_seqs
    if deployment is not None:
        budget, max_num_seqs = deployment.batched_tokens, deployment.num_seqs
    if budget is not None:
        if max_num_seqs is None:
            max_num_seqs = min(DEFAULT_MAX_NUM_SEQS_WITH_BUDGET, budget)
        elif max_num_seqs > budget:
            raise UsageError(
                f"--max-num-batched-tokens {budget} must be >= --max-num-seqs {max_num_seqs}: every running "
                "sequence decodes a token each step (vLLM requires the same)"
            )
    if max_num_seqs is not None and max_num_seqs < max(args.n, args.beam_width):
        raise UsageError(
            f"--max-num-seqs {max_num_seqs} cannot run one request of "
            f"{max(args.n, args.beam_width)} sequences"
        )
    return SimConfig(
        step_time=_time_model(args, deployment),
        n=args.n,
        beam_width=args.beam_width,
        beam_prune_prob=0.1 if args.beam_prune_prob is None else args.beam_prune_prob,
        seed=args.seed,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=budget,
        scheduler=args.scheduler,
        enable_chunked_prefill=args.enable_chunked_prefill is not False,
        max_time=args.max_time,
        check_invariants=args.check,
    )


def _time_model(args: argparse.Namespace, deployment: Deployment | None) -> StepTimeModel:
    """The user's linear coefficients when any is given, else the deployment's roofline, else 50 ms."""
    linear = (
        args.step_time,
        args.step_time_per_seq,
        args.step_time_per_prefill_token,
        args.step_time_per_context_token,
    )
    if deployment is not None and all(value is None for value in linear):
        return deployment.step_time_model()
    base, per_seq, per_prefill, per_context = (value or 0.0 for value in linear)
    return StepTime(base or DEFAULT_STEP_TIME_S, per_seq, per_prefill, per_context)


def _window(args: argparse.Namespace) -> tuple[float, float] | None:
    if not args.window:
        return None
    start, end = args.window
    if not start < end:
        raise UsageError(f"--window {start:g} {end:g}: START must be before END")
    return (start, end)


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(
            "the plot needs matplotlib, which is not installed: pip install matplotlib, or pass --no-plot"
        ) from None


def _max_seq_len(args: argparse.Namespace, deployment: Deployment | None = None) -> int:
    if args.max_model_len is not None:
        value = args.max_model_len
        if deployment is not None and value > deployment.model.max_model_len:
            raise UsageError(
                f"--max-model-len {value:,} exceeds {deployment.model.name}'s "
                f"{deployment.model.max_model_len:,} positions"
            )
    elif args.trace:
        value = deployment.model.max_model_len if deployment is not None else DEFAULT_TRACE_MAX_SEQ_LEN
    else:
        value = _range(args, "prompt_range")[1] + _range(args, "output_range")[1]
        if deployment is not None:
            value = min(value, deployment.model.max_model_len)
    if value < 2:
        raise UsageError(
            f"--max-model-len {value}: a sequence needs at least one prompt and one output token; use >= 2"
        )
    return value


def _range(args: argparse.Namespace, name: str) -> tuple[int, int]:
    default = DEFAULT_PROMPT_RANGE if name == "prompt_range" else DEFAULT_OUTPUT_RANGE
    low, high = getattr(args, name) or default
    if low > high:
        raise UsageError(f"--{name.replace('_', '-')} {low} {high}: LO must not exceed HI")
    return low, high


def _kv_slots(args: argparse.Namespace, max_seq_len: int) -> int:
    if args.kv_slots is not None:
        return int(args.kv_slots)
    if args.num_blocks is not None:
        return int(args.num_blocks) * (args.block_size or 16)
    return (args.rows or DEFAULT_ROWS) * max_seq_len


def _size_flag(args: argparse.Namespace) -> str:
    for flag in ("kv_slots", "num_blocks", "rows"):
        if getattr(args, flag) is not None:
            return f"--{flag.replace('_', '-')} {getattr(args, flag):,}"
    return f"--rows {DEFAULT_ROWS} (default) x --max-model-len"


def _check_sizes(args: argparse.Namespace, kinds: list[str], kv_slots: int, max_seq_len: int) -> None:
    """Refuse, before allocating anything, sizes whose bookkeeping this machine cannot hold."""
    size = _size_flag(args)
    if "naive" in kinds and kv_slots < max_seq_len:
        raise UsageError(
            f"{size}: smaller than one naive row of --max-model-len {max_seq_len:,} slots; give the caches "
            "more KV slots or lower --max-model-len"
        )
    if "paged" in kinds:
        blocks = kv_slots // (args.block_size or 16)
        require_memory(
            blocks * _BYTES_PER_BLOCK[bool(args.enable_prefix_caching)],
            f"{size}: a paged pool of {blocks:,} blocks",
            "give the caches fewer KV slots or larger blocks",
            UsageError,
        )
    if args.trace is None:
        requests = args.num_requests or DEFAULT_NUM_REQUESTS
        require_memory(
            requests * _BYTES_PER_REQUEST,
            f"--num-requests {requests:,}",
            "simulate fewer requests",
            UsageError,
        )
    if args.enable_prefix_caching:
        require_memory(
            max_seq_len * _BYTES_PER_TOKEN_ID * max(args.n, args.beam_width),
            f"--max-model-len {max_seq_len:,} with prefix caching (token ids of one request)",
            "lower --max-model-len",
            UsageError,
        )


def _workload(args: argparse.Namespace, max_seq_len: int) -> tuple[list[Request], str]:
    """The request list and one line describing it (what was loaded, generated, cut or dropped)."""
    from pagedkv.simulator.traces import load_trace

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
        wanted = args.num_requests if not trace.timed else None
        repeated = wanted is not None and wanted > len(trace.requests)
        tail = f", lengths repeated to {wanted:,} requests" if repeated else ""
        return (
            with_poisson_arrivals(trace.requests, rate, args.seed, wanted if repeated else None),
            f"{trace.describe()}; Poisson arrivals at {rate:g} req/s (seed {args.seed}){tail}",
        )
    num = args.num_requests or DEFAULT_NUM_REQUESTS
    prompt, output = _range(args, "prompt_range"), _range(args, "output_range")
    requests = synthetic_workload(num, rate, prompt, output, args.seed)
    fitted, changed = _fit(requests, max_seq_len, args.on_too_long)
    note = (
        f"; {changed:,} {'dropped' if args.on_too_long == 'drop' else 'truncated'} to --max-model-len"
        if changed
        else ""
    )
    return fitted, (
        f"{len(fitted):,} synthetic requests: Poisson {rate:g} req/s, prompt {prompt[0]}-{prompt[1]}, "
        f"output {output[0]}-{output[1]} tokens, seed {args.seed}{note}"
    )


def _fit(requests: list[Request], max_seq_len: int, on_too_long: str) -> tuple[list[Request], int]:
    """Apply the trace loaders' max-length policy to synthetic requests (keep the output, cut the prompt)."""
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
        raise UsageError(
            f"all {len(requests):,} requests are longer than --max-model-len {max_seq_len}; "
            "raise it or use --on-too-long truncate"
        )
    if len(kept) < len(requests):
        kept = [replace(r, request_id=i) for i, r in enumerate(kept)]
    return kept, changed


def _sampling(config: SimConfig) -> str:
    if config.beam_search:
        return f"beam search, width {config.beam_width}, prune probability {config.beam_prune_prob:g} a step"
    if config.n > 1:
        return f"parallel sampling, n = {config.n}"
    return "one output per prompt"


def _write_json(args: argparse.Namespace, results: dict[str, SimResult], built: Run) -> None:
    document = {
        "options": {k: v for k, v in vars(args).items() if k != "func"},
        "workload": built.workload,
        "memory": built.memory,
        "scheduler": built.config.describe_scheduler(),
        "notes": list(built.notes),
        "capacity_slots": next(iter(results.values())).capacity_slots,
        "caches": {name: result.to_dict() for name, result in results.items()},
    }
    write_json(args.json, document)


CSV_COLUMNS = (
    "cache",
    "request_id",
    "arrival_s",
    "prompt_len",
    "output_len",
    "first_admit_step",
    "finish_step",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "normalized_s",
    "preemptions",
)


def _write_csv(path: str, requests: list[Request], results: dict[str, SimResult]) -> None:
    """One row per request and cache; empty cells for a request that did not finish."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for name, result in results.items():
            r = result.requests
            for i, request in enumerate(requests):
                first, finish, arrival = r.first_token_time[i], r.finish_time[i], request.arrival_time
                done = not math.isnan(finish)
                output = request.output_len
                writer.writerow(
                    (
                        name,
                        request.request_id,
                        f"{arrival:.6f}",
                        request.prompt_len,
                        output,
                        r.first_admit_step[i],
                        r.finish_step[i],
                        f"{first - arrival:.6f}" if done else "",
                        f"{(finish - first) / (output - 1):.6f}" if done and output > 1 else "",
                        f"{finish - arrival:.6f}" if done else "",
                        f"{(finish - arrival) / output:.6f}" if done else "",
                        r.preemptions[i],
                    )
                )
