"""Wall time of a 48-point `pagedkv sweep` on each backend: local with 1 and 2 processes, and local Ray.

The sweep: 4 block sizes (8, 16, 32, 64) x 4 Poisson rates (2, 4, 8, 16 req/s) x 3 seeds (0, 1, 2), each
point the first 10,000 requests of the ShareGPT length trace of the paper's artifact
(sharegpt_opt_text_completion_length.csv) through the paged cache with 65,536 KV slots, sequences cut
to 2,048 tokens. Every run is a fresh `pagedkv sweep` process (interpreter start, Ray start and
shutdown, CSV + Parquet written; no plots), so the numbers are what a user waits for.

    python benchmarks/bench_sweep.py [--rounds 1] [--num-requests 10000] [--traces DIR]

Runs are interleaved (round r runs the backends in rotated order) because the machine is shared: each
run prints the load average before it started, and the speed-ups are ratios within one invocation.
The three results.csv files must be identical (checked), since every point is seeded by its inputs.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAREGPT = "sharegpt_opt_text_completion_length.csv"
# Ray on Linux binds a local cluster to the machine's network address; this Ray setting (meant for
# macOS/Windows) keeps it on 127.0.0.1, as the shared development machine asks.
LOOPBACK_RAY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
BACKENDS = {
    "local, 1 process": ["--jobs", "1"],
    "local, 2 processes": ["--jobs", "2"],
    "Ray (local)": ["--ray"],
}


def find(name: str, given: Path | None) -> Path:
    """`name` in --traces DIR, else where the package looks (`pagedkv.simulator.traces.find_trace`)."""
    from pagedkv.simulator.traces import find_trace

    found = given / name if given is not None else find_trace(name)
    if found is None or not found.is_file():
        raise SystemExit(f"{name} not found; pass --traces DIR")
    return found


def sweep_args(trace: Path, num_requests: int) -> list[str]:
    return [
        "sweep",
        *("--trace", str(trace), "--num-requests", str(num_requests), "--caches", "paged"),
        *("--kv-slots", "65536", "--max-model-len", "2048", "--no-plot"),
        *("--grid", "block-size=8,16,32,64", "--grid", "rate=2,4,8,16", "--grid", "seed=0,1,2"),
    ]


def run_once(args: list[str], out_dir: Path) -> tuple[float, float]:
    """(wall s, CPU s of the process and its waited-for children: the pool's workers, not Ray's)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pagedkv", *args, "--out-dir", str(out_dir)],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **LOOPBACK_RAY},
    )
    if done.returncode != 0:
        sys.exit(f"bench_sweep: pagedkv sweep exited {done.returncode}:\n{done.stderr[-2000:]}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--num-requests", type=int, default=10_000)
    parser.add_argument("--traces", type=Path, help="folder holding the trace files")
    args = parser.parse_args()
    trace = find(SHAREGPT, args.traces)
    if not trace.exists():
        sys.exit(f"bench_sweep: {trace} not found; give --traces DIR or set PAGEDKV_TRACES")
    base = sweep_args(trace, args.num_requests)
    names = list(BACKENDS)
    walls: dict[str, list[float]] = {name: [] for name in names}
    print(f"48 points x {args.num_requests:,} ShareGPT requests, paged cache; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as folder:
        tables: dict[str, str] = {}
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                out = Path(folder) / f"round{round_ + 1}-{names.index(name)}"
                load = os.getloadavg()[0]
                wall, cpu = run_once([*base, *BACKENDS[name]], out)
                walls[name].append(wall)
                table = (out / "results.csv").read_text()
                tables.setdefault(name, table)
                cpu_note = f", CPU {cpu:6.1f} s" if "Ray" not in name else ""
                print(
                    f"  round {round_ + 1} {name:20s} {wall:6.1f} s wall{cpu_note}  (load {load:.2f} before)"
                )
        reference = tables[names[0]]
        for name, table in tables.items():
            if table != reference:
                difference = _diff(reference, table)
                sys.exit(f"bench_sweep: results.csv differs between {names[0]} and {name}: {difference}")
        print(f"  results.csv identical on every backend ({reference.count(chr(10)) - 1} rows)")
    median = {name: statistics.median(values) for name, values in walls.items()}
    one = median[names[0]]
    for name in names:
        print(
            f"{name:20s} median {median[name]:6.1f} s, {48 / median[name]:.2f} points/s, "
            f"speed-up {one / median[name]:.2f}x"
        )


def _diff(one: str, other: str) -> str:
    """The first row and columns where two results.csv texts differ."""
    a, b = list(csv.DictReader(io.StringIO(one))), list(csv.DictReader(io.StringIO(other)))
    if len(a) != len(b) or (a and list(a[0]) != list(b[0])):
        return f"{len(a)} vs {len(b)} rows, columns equal: {bool(a and b and list(a[0]) == list(b[0]))}"
    for number, (x, y) in enumerate(zip(a, b, strict=True)):
        columns = {key: (x[key], y[key]) for key in x if x[key] != y[key]}
        if columns:
            return f"row {number + 1} ({x['block_size']=} {x['rate']=} {x['seed']=}): {columns}"
    return "same rows, different text"


if __name__ == "__main__":
    main()
