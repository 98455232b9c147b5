"""One simulation of the planner: a configuration serving one seed's stream at one request rate.

Invariant: a `PointTask` carries everything its simulation depends on (the configuration's `pagedkv
simulate` argv, the rate, the seed, the stream length, the measured share), so `run_point` -- the
top-level function every backend runs -- gives the same `PointResult` in any process and any order.

The stream (`stream`): each seed fixes the request *lengths* once -- for a trace, a seeded random
sample of its rows (without replacement until the trace is used up), so every stream has the trace's
length distribution throughout, as a steady state needs; for a trace with prefix ids (Mooncake),
``num_requests`` consecutive rows from a seeded offset instead, so the prefixes neighbouring requests
share survive; for the synthetic workload, `pagedkv simulate`'s own requests of that seed -- and
Poisson arrivals at the candidate rate, drawn from the seed. The same seed at another
rate is therefore the same requests with every arrival time scaled by the ratio of the rates (common
random numbers), which is what makes latency rise smoothly with rate. ``rate = inf`` puts every
arrival at 0: the saturated run whose completion rate is the deployment's throughput.

The run itself is `pagedkv simulate`'s (`build_run`): parsed and built once per process and argv (a
trace is read once, not once per point); each point gets a fresh copy of the never-started cache.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import random
from collections.abc import Hashable
from dataclasses import dataclass

from pagedkv.plan.measure import PointResult, measure, measured_window
from pagedkv.simulator.cli import Run, build_run, parse_run_argv
from pagedkv.simulator.loop import simulate
from pagedkv.simulator.workload import Request, with_poisson_arrivals

MEASURED = (0.1, 0.9)
"""The measured requests of a stream: the middle 80 % by arrival. The first 10 % fill an empty system
(warm-up), the last 10 % are served while arrivals have stopped and the batch drains (cool-down)."""


@dataclass(frozen=True, slots=True)
class PointTask:
    """Configuration ``key`` (its simulate argv) serving seed `seed`'s stream of `num_requests` requests
    at `rate` requests/s."""

    key: Hashable
    argv: tuple[str, ...]
    rate: float
    seed: int
    num_requests: int
    synthetic: bool  # True: the lengths are simulate's synthetic ones for this seed; False: a trace's


def run_point(task: PointTask) -> PointResult:
    """Simulate `task` and measure its middle requests (the function every backend runs)."""
    base = _base_run(task.argv, task.seed if task.synthetic else None, task.num_requests)
    requests = stream(base.requests, task.rate, task.seed, task.num_requests, task.synthetic)
    first, last = measured_range(len(requests))
    window = measured_window(requests, first, last)
    config = dataclasses.replace(base.config, seed=task.seed)
    result = simulate(requests, copy.deepcopy(base.caches[0]), config, keep_series=False, window=window)
    return measure(task.key, task.rate, task.seed, requests, result, first, last)


def measured_range(count: int) -> tuple[int, int]:
    """The indices ``[first, last)`` of the measured requests of a stream of `count`."""
    first = math.floor(MEASURED[0] * count)
    last = max(math.ceil(MEASURED[1] * count), first + 1)
    return first, min(last, count)


def stream(pool: list[Request], rate: float, seed: int, num_requests: int, synthetic: bool) -> list[Request]:
    """Seed `seed`'s `num_requests` requests at `rate` requests/s (see the module docstring)."""
    if synthetic:
        lengths = pool[:num_requests]
    elif any(r.prefix_hash_ids for r in pool):
        offset = random.Random(f"pagedkv plan window {seed}").randrange(len(pool))
        lengths = [pool[(offset + i) % len(pool)] for i in range(num_requests)]
    else:
        rng = random.Random(f"pagedkv plan sample {seed}")
        lengths = []
        while len(lengths) < num_requests:
            lengths += rng.sample(pool, min(len(pool), num_requests - len(lengths)))
    if math.isinf(rate):
        return [dataclasses.replace(r, request_id=i, arrival_time=0.0) for i, r in enumerate(lengths)]
    return with_poisson_arrivals(lengths, rate, seed)


@functools.lru_cache(maxsize=8)
def _base_run(argv: tuple[str, ...], seed: int | None, num_requests: int) -> Run:
    """The configuration's requests (the trace, or seed `seed`'s synthetic lengths), caches and settings."""
    extra = ["--num-requests", str(num_requests), "--seed", str(seed)] if seed is not None else []
    return build_run(parse_run_argv([*argv, *extra]))
