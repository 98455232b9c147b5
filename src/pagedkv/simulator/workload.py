"""Requests and the synthetic workload every cache in a comparison serves.

Invariant: a request list is sorted by `arrival_time`, starts at 0.0, has `request_id == index`,
and every request has `prompt_len >= 1` and `output_len >= 1`. The same seed gives the same list
on every run and every platform (only `random.Random` is used), so naive and paged caches can be
handed the *identical* requests and any difference in the results comes from the cache alone.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from pagedkv.errors import InvalidArgument

# Why 10 requests/s keeps the system loaded: a default request holds about 2,100 prompt tokens plus up
# to 275 output tokens on average and needs ~275 engine steps to finish. A pool of ~100k token slots
# then runs ~45 such sequences at once and completes ~45 / 275 = 0.16 requests per step, i.e. ~3-8
# requests/s for a step of 20-50 ms. Arriving at 10/s, the 1,000 requests land within ~100 s, faster
# than they can be served, so a queue builds and memory stays full: the regime where waste shows.
DEFAULT_RATE = 10.0
DEFAULT_PROMPT_RANGE = (200, 4000)
DEFAULT_OUTPUT_RANGE = (50, 500)
PREFIX_BLOCK_TOKENS = 512


@dataclass(frozen=True, slots=True)
class Request:
    """One generation request: how long its prompt is, how many tokens it will generate, and when.

    `prefix_hash_ids` (Mooncake traces) names the content of each `prefix_block_tokens`-token chunk of
    the prompt, the last chunk possibly partial: two requests whose ids agree on a leading run share
    that many tokens of prompt, which is what prefix caching can reuse.
    """

    request_id: int
    arrival_time: float
    prompt_len: int
    output_len: int
    prefix_hash_ids: tuple[int, ...] | None = None
    prefix_block_tokens: int = PREFIX_BLOCK_TOKENS

    def __post_init__(self) -> None:
        if self.prompt_len < 1 or self.output_len < 1:
            raise InvalidArgument(
                f"request {self.request_id}: prompt_len={self.prompt_len} and output_len={self.output_len} "
                "must both be >= 1 (a request needs a prompt and generates at least one token)"
            )
        if not (self.arrival_time >= 0.0 and math.isfinite(self.arrival_time)):
            raise InvalidArgument(
                f"request {self.request_id}: arrival_time={self.arrival_time!r} must be a finite number >= 0"
            )
        if self.prefix_block_tokens < 1:
            raise InvalidArgument(
                f"request {self.request_id}: prefix_block_tokens={self.prefix_block_tokens} must be >= 1"
            )

    @property
    def total_len(self) -> int:
        """Tokens the sequence holds when it finishes: the most KV slots it can ever need."""
        return self.prompt_len + self.output_len


def synthetic_workload(
    num_requests: int = 1000,
    rate: float = DEFAULT_RATE,
    prompt_range: tuple[int, int] = DEFAULT_PROMPT_RANGE,
    output_range: tuple[int, int] = DEFAULT_OUTPUT_RANGE,
    seed: int = 0,
) -> list[Request]:
    """The seed's workload: Poisson arrivals at `rate` requests/s, lengths uniform in closed ranges.

    Gaps between arrivals are exponential with mean 1/`rate` seconds (that is what makes the arrival
    process Poisson); the first request arrives at 0.0.
    """
    if num_requests < 1:
        raise InvalidArgument(f"num_requests={num_requests} must be >= 1")
    _check_rate(rate)
    _check_range("prompt_range", prompt_range)
    _check_range("output_range", output_range)
    rng = random.Random(seed)
    arrivals = _poisson_arrivals(rng, num_requests, rate)
    return [
        Request(
            request_id=i,
            arrival_time=arrival,
            prompt_len=rng.randint(*prompt_range),
            output_len=rng.randint(*output_range),
        )
        for i, arrival in enumerate(arrivals)
    ]


def with_poisson_arrivals(
    requests: list[Request], rate: float, seed: int = 0, num_requests: int | None = None
) -> list[Request]:
    """The same requests in the same order, re-timed as Poisson arrivals at `rate` requests/s.

    For traces that carry lengths but no timestamps (`TraceResult.timed` is False). Request ids are
    renumbered to the list index so the module invariant holds whatever the input ids were.
    `num_requests` (default: as many as given) cycles through the given lengths as often as needed,
    e.g. a million requests with the lengths of a 84,000-row trace.
    """
    _check_rate(rate)
    if not requests:
        return []
    count = len(requests) if num_requests is None else num_requests
    arrivals = _poisson_arrivals(random.Random(seed), count, rate)
    size = len(requests)
    return [
        Request(
            i,
            arrival,
            (r := requests[i % size]).prompt_len,
            r.output_len,
            r.prefix_hash_ids,
            r.prefix_block_tokens,
        )
        for i, arrival in enumerate(arrivals)
    ]


def _poisson_arrivals(rng: random.Random, count: int, rate: float) -> list[float]:
    arrivals = []
    now = 0.0
    for i in range(count):
        if i:
            now += rng.expovariate(rate)
        arrivals.append(now)
    return arrivals


def _check_rate(rate: float) -> None:
    if not (rate > 0 and math.isfinite(rate)):
        raise InvalidArgument(f"rate={rate!r} requests/s must be a finite number > 0")


def _check_range(name: str, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if not (1 <= low <= high):
        raise InvalidArgument(f"{name}={bounds!r} must satisfy 1 <= low <= high (both ends are included)")
