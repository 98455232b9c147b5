"""Wall time of the simulator against the issue's targets.

1. ``python simulate.py`` with its defaults (1000 requests, five caches, the plot written): target <= 3 s.
   Timed as a fresh process, interpreter start and the matplotlib import included.
2. The Azure LLM inference 2023 conversation trace (19,366 requests) through the naive and the paged
   cache: target <= 10 s. Timed in-process: trace loading, then each cache's simulation.
3. 10,000 ShareGPT-length requests (the Llama-2-tokenized ShareGPT lengths, Poisson at 5 req/s) on
   Llama-3.1-8B on one H100 with vLLM V1's chunked prefill (issue 10): target <= 10 s. Timed as a fresh
   `pagedkv simulate --model ...` process, everything included.

    python benchmarks/bench_simulate.py [--repeat 3] [--traces DIR]

The traces are looked up where the package looks (`find_trace`: $PAGEDKV_TRACES, ../shared/data/traces)
or in --traces DIR; the
benchmark is skipped, saying so, when it is absent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AZURE_CONV = "AzureLLMInferenceTrace_conv.csv"
SHAREGPT_LLAMA = "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"


def bench_default(repeat: int) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    str(REPO / "simulate.py"),
                    "--out",
                    os.path.join(folder, "fragmentation.png"),
                ],
                check=True,
                capture_output=True,
            )
            times.append(time.perf_counter() - start)
    return times


def bench_azure(trace: Path, repeat: int) -> None:
    sys.path.insert(0, str(REPO / "src"))
    from pagedkv.simulator import compare, load_trace, standard_caches

    for run in range(repeat):
        start = time.perf_counter()
        loaded = load_trace(trace, max_seq_len=8192)
        load_s = time.perf_counter() - start
        results = compare(
            loaded.requests, standard_caches(32 * 8192, 8192, kinds=("naive", "paged"), watermark=0.01)
        )
        total = time.perf_counter() - start
        parts = ", ".join(
            f"{name} {r.wall_s:.2f} s ({r.totals.steps:,} steps, {r.totals.batch:,} tokens, "
            f"{1e6 * r.wall_s / r.totals.batch:.2f} us/token)"
            for name, r in results.items()
        )
        print(f"  run {run + 1}: {total:.2f} s total = load {load_s:.2f} s + {parts}")


def bench_model(trace: Path, repeat: int) -> None:
    command = [
        sys.executable,
        "-m",
        "pagedkv",
        "simulate",
        "--model",
        "Llama-3.1-8B",
        "--gpu",
        "H100-80GB",
        "--trace",
        str(trace),
        "--num-requests",
        "10000",
        "--rate",
        "5",
        "--no-plot",
    ]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - start)
    best = min(times)
    print(
        f"  median {statistics.median(times):.2f} s, best {best:.2f} s over {len(times)} runs "
        f"= {10_000 / best:,.0f} requests simulated per second (process start included)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--traces", type=Path, help="folder holding the trace files")
    args = parser.parse_args()

    times = bench_default(args.repeat)
    print(
        f"python simulate.py (defaults, plot included): median {statistics.median(times):.2f} s, "
        f"min {min(times):.2f} s over {len(times)} runs (target <= 3 s)"
    )
    from pagedkv.simulator.traces import find_trace

    azure = args.traces / AZURE_CONV if args.traces else find_trace(AZURE_CONV)
    folder = azure.parent if azure is not None and azure.is_file() else None
    if folder is None:
        print(f"trace benchmarks: skipped ({AZURE_CONV} not found; pass --traces DIR)")
        return
    print(f"Azure conversation trace, naive + paged, 262,144 KV slots each (target <= 10 s): {folder}")
    bench_azure(folder / AZURE_CONV, args.repeat)
    print("10,000 ShareGPT-length requests, Llama-3.1-8B on one H100, chunked prefill (target <= 10 s):")
    bench_model(folder / SHAREGPT_LLAMA, args.repeat)


if __name__ == "__main__":
    main()
