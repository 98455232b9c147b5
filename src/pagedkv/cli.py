"""The `pagedkv` console script (and `python -m pagedkv`): one sub-command per module.

Each module listed in `COMMANDS` exposes `add_command(subparsers)`, which registers its
parser and sets `func` to the callable that runs it (returning an exit code). Modules
keep heavy imports (matplotlib, torch) inside that callable so `pagedkv --help` stays fast
and works without the optional extras.

Exit codes, the same for every command: 0 done; 2 a user's mistake (a `PagedKVError`: one line
on stderr naming the option or value, never a traceback); 130 interrupted by Ctrl-C (one line,
"interrupted"; outputs are written atomically, so nothing is left half-written); 141 when the output
pipe was closed early (`| head`), silently.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from pagedkv import __version__
from pagedkv.errors import PagedKVError
from pagedkv.options import Formatter, Parser

COMMANDS = (
    "pagedkv.demo",
    "pagedkv.simulator.cli",
    "pagedkv.watch.cli",
    "pagedkv.engine.cli",
    "pagedkv.paper.cli",
    "pagedkv.sweep.cli",
    "pagedkv.plan.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="pagedkv",
        formatter_class=Formatter,
        description="Paged KV-cache manager (PagedAttention, Kwon et al., SOSP 2023): "
        "block manager, simulator, real KV tensors.",
    )
    parser.add_argument("--version", action="version", version=f"pagedkv {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).add_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _dispatch(argv)
    except KeyboardInterrupt:  # also while the commands' modules are imported, before any work
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`pagedkv simulate | head`): stop quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


def _dispatch(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except PagedKVError as exc:
        print(f"pagedkv {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
