"""One simulation at scale: wall time and peak memory at 10k, 100k and 1M requests (issue 11).

Each size runs as a fresh `python -m pagedkv simulate` process (interpreter start, trace loading,
workload generation, the simulation and the summary table all included), timed by wall clock, its
peak resident memory read from the kernel (`os.wait4`). The workload: the paper's ShareGPT lengths
(84,226 rows, OPT tokenizer) repeated to N requests with Poisson arrivals, through the paged cache
with per-request latency metrics, under vLLM V1's chunked-prefill scheduler.

Memory that does not grow with the steps: the same 100k requests are also run at a lower rate
(fewer running at once, so more steps) and with ``--json`` (every per-step series kept): the peak of
the plain runs stays put while the step count moves; only ``--json`` grows with it.

    python benchmarks/bench_scale.py [--sizes 10000 100000 1000000] [--traces DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAREGPT = "sharegpt_opt_text_completion_length.csv"
# The deployment: Llama-3.1-8B on one H100, vLLM's defaults for the engine.
DEPLOYMENT = ["--model", "Llama-3.1-8B", "--gpu", "H100-80GB", "--max-num-batched-tokens", "8192"]
RATE = "20"  # req/s: below what this deployment sustains on ShareGPT lengths, so the queue stays short


_CHILD = (
    "import resource, sys\n"
    "from pagedkv.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def run(args: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in bytes, and stdout of one `pagedkv simulate` process."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, "simulate", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"pagedkv simulate {' '.join(args)} failed:\n{done.stderr}")
    peak_kb = int(done.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    return wall, peak_kb * 1024, done.stdout


def _steps(out: str) -> str:
    line = next((line for line in out.splitlines() if line.startswith("steps / simulated time")), "")
    return line.split()[-3] if line else "?"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--traces", type=Path, help="folder holding the trace files")
    args = parser.parse_args()
    from pagedkv.simulator.traces import find_trace

    trace = args.traces / SHAREGPT if args.traces else find_trace(SHAREGPT)
    if trace is None or not trace.is_file():
        raise SystemExit(f"{SHAREGPT} not found; pass --traces DIR")
    base = ["--trace", str(trace), "--caches", "paged", "--no-plot", *DEPLOYMENT]
    print(f"{'requests':>10} {'wall (s)':>9} {'req/s':>9} {'steps':>10} {'peak RSS (MB)':>14}")
    for size in args.sizes:
        wall, peak, out = run([*base, "--num-requests", str(size), "--rate", RATE])
        print(f"{size:>10,} {wall:>9.1f} {size / wall:>9,.0f} {_steps(out):>10} {peak / 2**20:>14,.0f}")
    print("\n100,000 requests: peak memory against the number of steps")
    with tempfile.TemporaryDirectory() as folder:
        for label, extra in (
            (f"rate {RATE}", ["--rate", RATE]),
            ("rate 5 (more steps)", ["--rate", "5"]),
            (
                f"rate {RATE}, --json (series kept)",
                ["--rate", RATE, "--json", os.path.join(folder, "m.json")],
            ),
        ):
            wall, peak, out = run([*base, "--num-requests", "100000", *extra])
            print(f"  {label:<34} {wall:6.1f} s, {_steps(out):>10} steps, peak RSS {peak / 2**20:,.0f} MB")


if __name__ == "__main__":
    main()
