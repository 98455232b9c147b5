"""`pagedkv paper`: reproduce the PagedAttention paper's memory figures and print them next to the paper's.

Invariant: every option is checked before the first simulation (a bad value, an unwritable ``--json`` or
``--out-dir``, a missing trace or matplotlib: one line naming the flag, exit 2); every file is written
atomically; progress goes through `pagedkv.progress.Progress`. Every option changes one documented input
(rates, duration, seeds, the time model's efficiencies, the beam model); the defaults are the paper's
setting. matplotlib is imported only when figures are written.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

from pagedkv.errors import UsageError
from pagedkv.options import (
    Formatter,
    non_negative_float,
    positive_float,
    positive_int,
    probability,
    seed_list,
    utilization,
)
from pagedkv.outputs import check_output_dir, check_output_file, write_json
from pagedkv.paper.setting import (
    DEFAULT_SEEDS,
    FIG12_PANELS,
    FIGURES,
    MAX_NUM_BATCHED_TOKENS,
    MAX_NUM_SEQS,
    PaperConfig,
    PaperSetting,
    paper_deployment,
)
from pagedkv.paper.sharegpt import TRACE_NAME, default_trace_path
from pagedkv.progress import Progress
from pagedkv.runner import add_backend_arguments, backend_from_args, task_map
from pagedkv.simulator.option_error import OptionError
from pagedkv.simulator.roofline import (
    DEFAULT_COMPUTE_EFFICIENCY,
    DEFAULT_HBM_EFFICIENCY,
    DEFAULT_HOST_OVERHEAD_S,
)
from pagedkv.simulator.traces import TraceError

DEFAULT_OUT_DIR = "paper-figures"


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    defaults = PaperConfig()
    parser = subparsers.add_parser(
        "paper",
        help="reproduce the paper's figures (2, 12, 13a, 15, 18b) side by side with the paper",
        description="Run the PagedAttention paper's experiments (OPT-13B on one A100-40GB, ShareGPT; Fig. 12 "
        "also OPT-66B and OPT-175B) on the simulator and print pagedkv's numbers next to the paper's, each "
        "the mean over seeds with its spread. See docs/paper.md.",
        formatter_class=Formatter,
    )
    parser.add_argument("--json", metavar="PATH", help="write every printed number (and the paper's) as JSON")
    parser.add_argument(
        "--out-dir", default=DEFAULT_OUT_DIR, help="folder for fig2.png, fig12.png ... fig18b.png"
    )
    parser.add_argument("--no-figures", action="store_true", help="skip the PNGs (no matplotlib needed)")
    parser.add_argument(
        "--trace",
        metavar="PATH",
        help=f"ShareGPT length CSV ({TRACE_NAME}; default: the shared traces folder)",
    )
    parser.add_argument("--figures", default=",".join(FIGURES), help="comma-separated subset to run")
    parser.add_argument(
        "--duration", type=positive_float, default=defaults.duration, help="seconds of arrivals"
    )
    parser.add_argument(
        "--window",
        type=non_negative_float,
        nargs=2,
        default=list(defaults.window),
        metavar=("START", "END"),
        help="average the steps that start in this time range (s)",
    )
    parser.add_argument(
        "--seeds",
        type=seed_list,
        default=f"{DEFAULT_SEEDS[0]}-{DEFAULT_SEEDS[-1]}",
        help="request-stream seeds, comma-separated and/or ranges (0-9 or 0,1,2)",
    )
    for figure, used_by in (("fig2", "Figs. 2 and 18b"), ("fig13a", "Fig. 13a"), ("fig15", "Fig. 15")):
        parser.add_argument(
            f"--{figure}-rate",
            type=positive_float,
            default=getattr(defaults, f"{figure}_rate"),
            help=f"requests/s for {used_by}",
        )
    parser.add_argument(
        "--fig12-panels",
        default=",".join(defaults.fig12_panels),
        help=f"Fig. 12 panels to run, comma-separated, from {', '.join(FIG12_PANELS)}",
    )
    parser.add_argument(
        "--fig12-duration",
        type=positive_float,
        default=defaults.fig12_duration,
        help="Fig. 12: seconds of arrivals in each stream (the artifact's 600; the paper ran 3,600)",
    )
    parser.add_argument(
        "--fig12-threshold",
        type=positive_float,
        default=defaults.fig12_threshold,
        help="Fig. 12: mean normalized latency (s/token) a sustained rate stays within",
    )
    parser.add_argument(
        "--beam-prune-prob",
        type=probability,
        default=defaults.beam_prune_prob,
        help="beam model: chance a beam is replaced by a fork of another, per decode step",
    )
    parser.add_argument(
        "--hbm-efficiency",
        type=utilization,
        default=DEFAULT_HBM_EFFICIENCY,
        help="fraction of HBM bandwidth reached",
    )
    parser.add_argument(
        "--compute-efficiency",
        type=utilization,
        default=DEFAULT_COMPUTE_EFFICIENCY,
        help="fraction of the fp16 tensor peak reached",
    )
    parser.add_argument(
        "--host-overhead-ms",
        type=non_negative_float,
        default=DEFAULT_HOST_OVERHEAD_S * 1e3,
        help="CPU time per step the GPU waits for",
    )
    parser.add_argument(
        "--max-num-batched-tokens",
        type=positive_int,
        default=MAX_NUM_BATCHED_TOKENS,
        help="the scheduler's tokens per step: one per running sequence plus the whole prompts admitted",
    )
    parser.add_argument(
        "--max-num-seqs", type=positive_int, default=MAX_NUM_SEQS, help="the scheduler's running sequences"
    )
    add_backend_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pagedkv.paper.report import format_report
    from pagedkv.paper.run import run_paper

    config = _config(args)
    backend = backend_from_args(args)
    trace = _trace(args.trace)
    json_path = check_output_file(args.json, "--json") if args.json else None
    out_dir = None if args.no_figures else check_output_dir(args.out_dir, "--out-dir")
    if out_dir is not None and importlib.util.find_spec("matplotlib") is None:
        raise UsageError(
            "--out-dir: writing figures needs matplotlib (pip install matplotlib), or pass --no-figures"
        )
    with Progress(None, desc="pagedkv paper", unit="sim") as progress:
        results = run_paper(config, trace, mapper=task_map(backend), progress=progress)
    print(format_report(results, config))
    if json_path is not None:
        write_json(json_path, results.to_json())
        print(f"wrote {json_path}")
    if out_dir is not None:
        from pagedkv.paper.figures import write_figures

        for path in write_figures(results, out_dir):
            print(f"wrote {path}")
    return 0


def _config(args: argparse.Namespace) -> PaperConfig:
    """The run's `PaperConfig`, every impossible combination reported as the flag the user typed (single
    values were checked while parsing)."""
    typed = {
        "figures": args.figures,
        "duration": f"{args.duration:g}",
        "window": " ".join(f"{v:g}" for v in args.window),
        "seeds": ",".join(map(str, args.seeds)),
        "fig2_rate": f"{args.fig2_rate:g}",
        "fig13a_rate": f"{args.fig13a_rate:g}",
        "fig15_rate": f"{args.fig15_rate:g}",
        "beam_prune_prob": f"{args.beam_prune_prob:g}",
        "fig12_panels": args.fig12_panels,
        "fig12_duration": f"{args.fig12_duration:g}",
        "fig12_threshold": f"{args.fig12_threshold:g}",
        "hbm_efficiency": f"{args.hbm_efficiency:g}",
        "compute_efficiency": f"{args.compute_efficiency:g}",
        "max_num_batched_tokens": str(args.max_num_batched_tokens),
        "max_num_seqs": str(args.max_num_seqs),
    }
    try:
        deployment = paper_deployment(
            max_num_batched_tokens=args.max_num_batched_tokens, max_num_seqs=args.max_num_seqs
        )
        time_model = deployment.step_time_model(
            hbm_efficiency=args.hbm_efficiency,
            compute_efficiency=args.compute_efficiency,
            host_overhead_s=args.host_overhead_ms / 1e3,
        )
        return PaperConfig(
            setting=PaperSetting(deployment),
            time_model=time_model,
            figures=tuple(name.strip() for name in args.figures.split(",") if name.strip()),
            duration=args.duration,
            window=(args.window[0], args.window[1]),
            fig2_rate=args.fig2_rate,
            fig13a_rate=args.fig13a_rate,
            fig15_rate=args.fig15_rate,
            seeds=args.seeds,
            beam_prune_prob=args.beam_prune_prob,
            fig12_panels=tuple(name.strip() for name in args.fig12_panels.split(",") if name.strip()),
            fig12_duration=args.fig12_duration,
            fig12_threshold=args.fig12_threshold,
        )
    except OptionError as exc:
        raise UsageError(exc.flag_message(typed.get(exc.option))) from None


def _trace(path: str | None) -> Path:
    if path is None:
        try:
            return default_trace_path()
        except TraceError as exc:
            raise UsageError(f"--trace not given and {exc}") from None
    if not os.path.isfile(path):
        raise UsageError(f"--trace {path}: no such file; give the ShareGPT length CSV ({TRACE_NAME})")
    return Path(path)
