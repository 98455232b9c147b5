"""What one simulation at one request rate measures: the latencies of its measured requests, the batch and
KV usage while they arrive, whether the queue grew, and how fast requests completed.

Invariant: a `PointResult` is plain, picklable data that names its own point (``key``, ``rate``,
``seed``), so results can come back from any process in any order; every number in it covers the same
*measured requests* -- a contiguous run of the stream by arrival, ``requests[first:last]`` -- or the
steps that start while they arrive. Requests outside that run load the system (warm-up before, a
cool-down after) but are not measured, because a run starts empty and ends draining, and neither is
the steady state a deployment serves.

Why the queue: a latency SLO on TPOT alone (say) holds even while requests queue for ever, since a
queued request's tokens come as fast as ever once it runs. The queue -- requests arrived that have
not produced their first token yet, waiting to be admitted or still prefilling -- stays near empty when
the deployment keeps up (a larger load runs as a larger batch) and grows by (arrival rate - service
rate) x time once it cannot, so its growth over the measured arrivals, as a share of those arrivals, is
the fraction of the load left unserved (`pagedkv.plan.verdict` turns it into a verdict). The number of
requests in the system would not do: it also grows while the batch of a higher load fills up, for as
long as the longest requests live, which a stream of a few thousand requests does not outlast.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from pagedkv.simulator.metrics import LATENCIES, SimResult
from pagedkv.simulator.workload import Request


@dataclass(frozen=True, slots=True)
class PointResult:
    """One simulation's measurement (see the module docstring). Latencies in seconds, by
    `pagedkv.simulator.metrics.LATENCIES` name; TPOT only for requests of more than one output token."""

    key: Hashable  # which configuration (the caller's key: a configuration index, a (panel, system) pair)
    rate: float  # requests/s of the Poisson stream; math.inf when every request arrives at once
    seed: int
    latencies: dict[str, tuple[float, ...]]
    batch_mean: float  # sequences decoding a token per step, over the steps that start in the window
    kv_usage_pct: float  # KV slots held, % of capacity, same steps
    queue_mean: float  # requests waiting, same steps
    preemptions: int  # of the measured requests
    arrivals: int  # measured requests
    queue_growth: (
        int  # requests queued (no first token yet) when the last measured one arrived, minus the first
    )
    completion_rate: float  # requests finished per second between the 10th and 90th percentile finish times
    window_s: tuple[float, float]  # first and last arrival of the measured requests

    @property
    def growth_share(self) -> float:
        """Queue growth over the window as a share of the measured arrivals (about 0 when it kept up)."""
        return self.queue_growth / self.arrivals if self.arrivals else 0.0


def measured_window(requests: Sequence[Request], first: int, last: int) -> tuple[float, float]:
    """The arrival times of the first and the last measured request (``requests[first:last]``), as the
    window `simulate` averages its per-step metrics over (the end nudged past the last arrival)."""
    start, end = requests[first].arrival_time, requests[last - 1].arrival_time
    return start, max(end, math.nextafter(start, math.inf))


def measure(
    key: Hashable,
    rate: float,
    seed: int,
    requests: Sequence[Request],
    result: SimResult,
    first: int,
    last: int,
) -> PointResult:
    """The measurement of ``requests[first:last]`` in `result`, a run `simulate` made with
    ``window=measured_window(requests, first, last)`` that ran every request to its end."""
    if not 0 <= first < last <= len(requests):
        raise ValueError(f"measured requests [{first}, {last}) not inside the {len(requests)} requests")
    r = result.requests
    window = measured_window(requests, first, last)
    summary = result.summary(window)
    return PointResult(
        key=key,
        rate=rate,
        seed=seed,
        latencies=_latencies(result, first, last),
        batch_mean=summary["batch_mean"],
        kv_usage_pct=summary["held_pct_mean"],
        queue_mean=summary["queue_mean"],
        preemptions=sum(r.preemptions[first:last]),
        arrivals=last - first,
        queue_growth=_queued(r.arrival_time, r.first_token_time, window[1])
        - _queued(r.arrival_time, r.first_token_time, window[0]),
        completion_rate=_completion_rate(r.finish_time),
        window_s=(requests[first].arrival_time, requests[last - 1].arrival_time),
    )


def _latencies(result: SimResult, first: int, last: int) -> dict[str, tuple[float, ...]]:
    r = result.requests
    out: dict[str, list[float]] = {name: [] for name in LATENCIES}
    for i in range(first, last):
        arrival, first_token, finish, output = (
            r.arrival_time[i],
            r.first_token_time[i],
            r.finish_time[i],
            r.output_len[i],
        )
        if math.isnan(finish):
            raise ValueError(f"request {i} did not finish: a measured run must serve every request")
        out["ttft"].append(first_token - arrival)
        out["e2e"].append(finish - arrival)
        out["normalized"].append((finish - arrival) / output)
        if output > 1:
            out["tpot"].append((finish - first_token) / (output - 1))
    return {name: tuple(values) for name, values in out.items()}


def _queued(arrivals: Sequence[float], first_tokens: Sequence[float], at: float) -> int:
    """Requests arrived by `at` without a first token by then (arrivals are sorted; first tokens not)."""
    arrived = bisect.bisect_right(arrivals, at)
    return arrived - sum(1 for t in first_tokens[:arrived] if t <= at)


def _completion_rate(finishes: Sequence[float]) -> float:
    """Requests finished per second over the middle 80 % of finishes (between the 10th and 90th
    percentile finish times): the service rate at saturation, the arrival rate when it keeps up."""
    ordered = sorted(finishes)
    low, high = round(0.1 * (len(ordered) - 1)), round(0.9 * (len(ordered) - 1))
    span = ordered[high] - ordered[low]
    return (high - low) / span if span > 0 else math.inf
