"""The paper's ShareGPT request stream: its own lengths, Poisson arrivals for a fixed duration.

Invariant: for a (rate, duration, seed) the request list is the same on every run: the requests that
arrive in ``[0, duration)`` of a seeded Poisson process, carrying, in a seeded shuffle, the *first* that
many length pairs of the trace with ``prompt + output < 2048`` -- how the authors' artifact builds its
workload (``benchmark/trace.py``), so the lengths served are the paper's, not a resample of them.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from pagedkv.errors import InvalidArgument
from pagedkv.simulator.traces import TraceError, find_trace, load_trace
from pagedkv.simulator.workload import Request, with_poisson_arrivals

TRACE_NAME = "sharegpt_opt_text_completion_length.csv"
MAX_TOTAL_LEN = 2048  # the artifact keeps pairs with prompt + output < 2048


def default_trace_path() -> Path:
    """The paper's trace in the shared traces folders (`pagedkv.simulator.traces.trace_folders`)."""
    found = find_trace(TRACE_NAME)
    if found is not None:
        return found
    raise TraceError(
        f"{TRACE_NAME} not found in $PAGEDKV_TRACES, <repo>/../shared/data/traces or ./shared/data/traces; "
        "pass --trace PATH (the ShareGPT lengths of the paper's artifact, sosp-ae-39/sosp-ae-astra)"
    )


def load_sharegpt(path: str | os.PathLike[str] | None = None) -> list[Request]:
    """Every length pair of the trace with prompt + output < 2048, in file order (79,725 of 84,226)."""
    trace = load_trace(
        path if path is not None else default_trace_path(),
        fmt="lengths",
        max_seq_len=MAX_TOTAL_LEN - 1,
        on_too_long="drop",
    )
    return trace.requests


def poisson_stream(pool: list[Request], rate: float, duration: float, seed: int = 0) -> list[Request]:
    """The requests arriving in ``[0, duration)`` at `rate` req/s, with the first lengths of `pool`.

    Raises InvalidArgument when `pool` has fewer pairs than arrivals (the artifact would repeat the trace;
    79,725 pairs cover 4 req/s for over five hours, so needing more is a mistake worth reporting).
    """
    if not duration > 0:
        raise InvalidArgument(f"duration={duration!r} must be > 0 seconds")
    arrivals = _arrival_times(pool, rate, duration, seed)
    lengths = pool[: len(arrivals)]
    random.Random(seed).shuffle(lengths)
    return with_poisson_arrivals(lengths, rate, seed)


def _arrival_times(pool: list[Request], rate: float, duration: float, seed: int) -> list[float]:
    """Arrival times before `duration`, timing only as long a prefix of `pool` as needed."""
    count = min(len(pool), int(rate * duration * 1.2) + 100)
    while True:
        times = [r.arrival_time for r in with_poisson_arrivals(pool[:count], rate, seed)]
        if times[-1] >= duration:
            return [t for t in times if t < duration]
        if count == len(pool):
            raise InvalidArgument(
                f"{rate} req/s for {duration} s needs more than the {len(pool):,} length pairs given; "
                "shorten the duration or lower the rate"
            )
        count = min(len(pool), 2 * count)
