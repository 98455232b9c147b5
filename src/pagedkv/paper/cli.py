"""`pagedkv paper`: reproduce the PagedAttention paper's memory figures and print them next to the paper's.

Every option changes one documented input (rates, duration, seeds, the time model's efficiencies, the
beam model); the defaults are the paper's setting. matplotlib is imported only when figures are written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pagedkv.errors import InvalidArgument
from pagedkv.paper.config import FIGURES, PaperConfig
from pagedkv.paper.timing import (
    DEFAULT_COMPUTE_EFFICIENCY,
    DEFAULT_HBM_EFFICIENCY,
    DEFAULT_HOST_OVERHEAD_S,
    RooflineIterationTime,
)

DEFAULT_OUT_DIR = "paper-figures"


def add_command(subparsers: argparse._SubParsersAction) -> None:
    defaults = PaperConfig()
    parser = subparsers.add_parser(
        "paper",
        help="reproduce the paper's memory figures (2, 13a, 15, 18b) side by side with the paper",
        description="Run the PagedAttention paper's memory experiments (OPT-13B on one A100-40GB, ShareGPT) "
        "on the simulator and print pagedkv's numbers next to the paper's. See docs/paper.md.",
    )
    parser.add_argument("--json", metavar="PATH", help="write every printed number (and the paper's) as JSON")
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help="directory for fig2.png ... fig18b.png")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNGs (no matplotlib needed)")
    parser.add_argument(
        "--trace", metavar="PATH", help="ShareGPT length CSV (default: the shared traces dir)"
    )
    parser.add_argument(
        "--figures", default=",".join(FIGURES), help=f"comma-separated subset of {','.join(FIGURES)}"
    )
    parser.add_argument("--duration", type=float, default=defaults.duration, help="seconds of arrivals")
    parser.add_argument(
        "--window",
        type=float,
        nargs=2,
        default=list(defaults.window),
        metavar=("START", "END"),
        help="average iterations that start in this time range (s)",
    )
    parser.add_argument(
        "--seeds", default=",".join(map(str, defaults.seeds)), help="comma-separated stream seeds"
    )
    parser.add_argument("--fig2-rate", type=float, default=defaults.fig2_rate, help="req/s for Figs. 2, 18b")
    parser.add_argument("--fig13a-rate", type=float, default=defaults.fig13a_rate, help="req/s for Fig. 13a")
    parser.add_argument("--fig15-rate", type=float, default=defaults.fig15_rate, help="req/s for Fig. 15")
    parser.add_argument(
        "--beam-prune-prob",
        type=float,
        default=defaults.beam_prune_prob,
        help="beam model: chance a beam is replaced by a fork of another, per decode step",
    )
    parser.add_argument("--hbm-efficiency", type=float, default=DEFAULT_HBM_EFFICIENCY)
    parser.add_argument("--compute-efficiency", type=float, default=DEFAULT_COMPUTE_EFFICIENCY)
    parser.add_argument("--host-overhead-ms", type=float, default=DEFAULT_HOST_OVERHEAD_S * 1e3)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pagedkv.paper.report import format_report
    from pagedkv.paper.run import run_paper

    config = _config(args)
    progress = _progress if sys.stderr.isatty() else None
    results = run_paper(config, args.trace, progress)
    if progress is not None:
        print(file=sys.stderr)
    print(format_report(results, config))
    if args.json:
        Path(args.json).write_text(json.dumps(results.to_json(), indent=2) + "\n")
        print(f"wrote {args.json}")
    if not args.no_figures:
        from pagedkv.paper.figures import write_figures

        for path in write_figures(results, args.out_dir):
            print(f"wrote {path}")
    return 0


def _config(args: argparse.Namespace) -> PaperConfig:
    time_model = RooflineIterationTime(
        hbm_efficiency=args.hbm_efficiency,
        compute_efficiency=args.compute_efficiency,
        host_overhead_s=args.host_overhead_ms / 1e3,
    )
    return PaperConfig(
        time_model=time_model,
        figures=tuple(name.strip() for name in args.figures.split(",") if name.strip()),
        duration=args.duration,
        window=(args.window[0], args.window[1]),
        fig2_rate=args.fig2_rate,
        fig13a_rate=args.fig13a_rate,
        fig15_rate=args.fig15_rate,
        seeds=_ints("seeds", args.seeds),
        beam_prune_prob=args.beam_prune_prob,
    )


def _ints(name: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InvalidArgument(f"--{name} {text!r}: expected comma-separated integers, e.g. 0,1,2") from None


def _progress(line: str) -> None:
    print(f"\r\033[Kpagedkv paper: {line}", end="", file=sys.stderr, flush=True)
