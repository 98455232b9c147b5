"""`pagedkv watch`: write the interactive memory map of a simulation (one HTML file), and optionally its GIF.

Invariant: every option is checked before the simulation starts (output paths and suffixes, frame
counts; the workload and cache options by `build_run`, as for `pagedkv simulate`), and every file is
written atomically, so a mistake costs one line and a Ctrl-C leaves no half-written page.
"""

from __future__ import annotations

import argparse
import time
import webbrowser
from pathlib import Path

from pagedkv.options import Formatter

DEFAULT_OUT = "watch.html"
DEFAULT_CACHES = "naive,paged"
DEFAULT_FRAMES = 600
DEFAULT_GIF_FRAMES = 60

_DESCRIPTION = (
    "Serve one request list with the naive and the paged KV cache (optionally an Orca policy too) and "
    "write one self-contained HTML page that plays their KV memory side by side, step by step, on one "
    "shared clock: every sequence's tokens, reservations, never-used slots and free memory, block tables, "
    "shared blocks and copy-on-write, with the simulator's metrics at each step. Same workload, memory and "
    "engine options as `pagedkv simulate`."
)


def add_command(subparsers: argparse._SubParsersAction) -> None:
    from pagedkv.simulator.cli import add_run_arguments
    from pagedkv.simulator.loop import CACHE_KINDS

    parser = subparsers.add_parser(
        "watch",
        help="an interactive memory map of the simulation, naive vs paged, in the browser (HTML)",
        description=_DESCRIPTION,
        formatter_class=Formatter,
    )
    add_run_arguments(parser)
    parser.set_defaults(caches=DEFAULT_CACHES, func=run)
    (caches,) = [action for action in parser._actions if action.dest == "caches"]
    caches.help = f"comma-separated, from {', '.join(CACHE_KINDS)}"  # the default is watch's own
    page = parser.add_argument_group("page")
    page.add_argument("--out", default=DEFAULT_OUT, metavar="PATH", help="the page (.html)")
    page.add_argument(
        "--frames",
        type=int,
        default=DEFAULT_FRAMES,
        help="most frames in the page: every step when the runs have fewer distinct step times, else "
        "this many evenly spaced moments (first and last step included)",
    )
    page.add_argument("--open", action="store_true", help="open the page in the default browser")
    page.add_argument("--gif", metavar="PATH", help="also write an animated GIF of the same frames (.gif)")
    page.add_argument(
        "--gif-frames", type=int, default=DEFAULT_GIF_FRAMES, help="frames in the GIF, spread over the page's"
    )


def run(args: argparse.Namespace) -> int:
    from pagedkv.errors import UsageError
    from pagedkv.outputs import check_output_file, write_text
    from pagedkv.progress import Progress
    from pagedkv.simulator.cli import build_run
    from pagedkv.watch.document import build_document
    from pagedkv.watch.page import render_page
    from pagedkv.watch.record import record

    started = time.perf_counter()
    out = check_output_file(args.out, "--out", (".html", ".htm"))
    gif = check_output_file(args.gif, "--gif", (".gif",)) if args.gif else None
    for flag, value in (("--frames", args.frames), ("--gif-frames", args.gif_frames)):
        if value < 2:
            raise UsageError(f"{flag} {value}: a film needs at least 2 frames (the first and the last step)")
    built = build_run(args, block_tables=True)  # the page draws every block table
    print(f"workload: {built.workload}")
    print(f"memory:   {built.memory}")
    with Progress(2 * len(built.caches) * len(built.requests), "simulating", "req") as progress:
        recording = record(built, args.frames, progress)
    document = build_document(recording)
    write_text(out, render_page(document))
    span = recording.times[-1] - recording.times[0]
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {len(recording.times)} frames over "
        f"{span:.1f} s of simulated time)"
    )
    if gif is not None:
        from pagedkv.watch.gif import write_gif

        frames = write_gif(gif, document, args.gif_frames)
        print(f"wrote {gif} ({gif.stat().st_size / 1e6:.2f} MB, {frames} frames)")
    if args.open and not webbrowser.open(Path(out).resolve().as_uri()):
        print(f"could not start a browser; open {out} yourself")
    print(f"({time.perf_counter() - started:.1f} s)")
    return 0
