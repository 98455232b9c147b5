"""What one run measured: per-step memory, per-request latency, and the summary computed from them.

Every step records the state at its end, after this step's tokens are written and before the
requests that finish in it free their memory (so a step's peak usage is what it shows):

- ``time``: when the step started (s); ``batch``: sequences that generated a token in it;
  ``queue``: requests waiting to be admitted or swapped back in;
- ``held``: KV slots held; ``tokens``: slots holding a token's KV (a shared block counted once);
- ``internal``, ``padding``, ``saved``: see `pagedkv.simulator.cache`.

The waste breakdown of capacity (the categories of the paper's Figure 2, plus one): token states;
reservation (held for tokens not generated yet) = held - padding - tokens - internal; internal
fragmentation (held, never to be used); external fragmentation & other = padding, plus free slots
while requests wait (memory that exists but that nobody waiting could use); free (no demand) = free
slots while nothing waits (idle memory, not waste). The paper's "external fragmentation & other"
is external + free.

Memory. A run of a million requests has millions of steps, so by default nothing is kept per step:
`StepTotals` accumulates sums and peaks (over the whole run, and over a window given up front) and
`StepTrend` keeps a down-sampled series for plots (at most `TREND_POINTS` points: bins that double
in length when full). `StepSeries` keeps every step, in compact arrays, only when asked
(``simulate(..., keep_series=True)``, ``pagedkv simulate --json``). Per-request results are arrays
of one entry per request.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Any

from pagedkv.simulator.config import SimConfig, SimulationConfigError
from pagedkv.simulator.option_error import OptionError

BREAKDOWN = ("token_states", "reservation", "internal", "external", "free")
BREAKDOWN_LABELS = {
    "token_states": "token states",
    "reservation": "reservation",
    "internal": "internal fragmentation",
    "external": "external fragmentation & other",
    "free": "free (no demand)",
}
BREAKDOWN_COLORS = {
    "token_states": "#3a923a",
    "reservation": "#f2b701",
    "internal": "#d62728",
    "external": "#7f7f7f",
    "free": "#dcdcdc",
}
TREND_POINTS = 600
PERCENTILES = (50, 90, 99)
LATENCIES = ("ttft", "tpot", "e2e", "normalized")
"""Per-request latencies: time to first token, time per output token after the first, end to end, and
the paper's normalized latency (end to end / output tokens), all in seconds."""


@dataclass(slots=True)
class StepTotals:
    """Sums and peaks of the per-step metrics over a set of steps (the summary needs nothing more)."""

    capacity: int
    steps: int = 0
    first_time: float = math.nan
    last_time: float = math.nan
    batch: int = 0
    batch_peak: int = 0
    queue: int = 0
    queue_peak: int = 0
    held: int = 0
    held_peak: int = 0
    tokens: int = 0
    internal: int = 0
    padding: int = 0
    saved: int = 0
    idle_free: int = 0  # free slots summed over the steps in which nothing waited

    def add(
        self,
        time: float,
        batch: int,
        queue: int,
        held: int,
        tokens: int,
        internal: int,
        padding: int,
        saved: int,
    ) -> None:
        if not self.steps:
            self.first_time = time
        self.last_time = time
        self.steps += 1
        self.batch += batch
        self.queue += queue
        self.held += held
        self.tokens += tokens
        self.internal += internal
        self.padding += padding
        self.saved += saved
        if batch > self.batch_peak:
            self.batch_peak = batch
        if queue > self.queue_peak:
            self.queue_peak = queue
        if held > self.held_peak:
            self.held_peak = held
        if not queue:
            self.idle_free += self.capacity - held

    def breakdown(self) -> dict[str, int]:
        """Each waste category summed over the steps, in slot-steps (they sum to capacity x steps)."""
        free_total = self.capacity * self.steps - self.held
        return {
            "token_states": self.tokens,
            "reservation": self.held - self.padding - self.tokens - self.internal,
            "internal": self.internal,
            "external": self.padding + free_total - self.idle_free,
            "free": self.idle_free,
        }


@dataclass(slots=True)
class StepSeries:
    """Every step's metrics (see the module docstring), 8 bytes a value."""

    time: array = field(default_factory=lambda: array("d"))
    batch: array = field(default_factory=lambda: array("q"))
    queue: array = field(default_factory=lambda: array("q"))
    held: array = field(default_factory=lambda: array("q"))
    tokens: array = field(default_factory=lambda: array("q"))
    internal: array = field(default_factory=lambda: array("q"))
    padding: array = field(default_factory=lambda: array("q"))
    saved: array = field(default_factory=lambda: array("q"))

    def __len__(self) -> int:
        return len(self.time)

    def add(
        self,
        time: float,
        batch: int,
        queue: int,
        held: int,
        tokens: int,
        internal: int,
        padding: int,
        saved: int,
    ) -> None:
        self.time.append(time)
        self.batch.append(batch)
        self.queue.append(queue)
        self.held.append(held)
        self.tokens.append(tokens)
        self.internal.append(internal)
        self.padding.append(padding)
        self.saved.append(saved)

    def totals(self, capacity: int, window: tuple[float, float] | None = None) -> StepTotals:
        """Sums and peaks over every step, or over the steps starting in ``[start, end)`` seconds."""
        totals = StepTotals(capacity)
        start, end = window if window is not None else (-math.inf, math.inf)
        columns = (self.time, self.batch, self.queue, self.held, self.tokens, self.internal, self.padding)
        for row in zip(*columns, self.saved, strict=True):
            if start <= row[0] < end:
                totals.add(*row)
        return totals

    def to_dict(self) -> dict[str, list[Any]]:
        return {name: list(getattr(self, name)) for name in self.__slots__}


@dataclass(slots=True)
class StepTrend:
    """A down-sampled copy of the series for plots: means over bins of consecutive steps.

    Bins hold `bin_steps` steps; when `TREND_POINTS * 2` bins are full, neighbours merge and bins
    double, so memory stays bounded whatever the run's length and the bins always cover it evenly.
    """

    capacity: int
    bin_steps: int = 1
    time: list[float] = field(default_factory=list)
    batch: list[float] = field(default_factory=list)
    held: list[float] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    _open: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    _count: int = 0

    def add(self, time: float, batch: int, held: int, tokens: int) -> None:
        acc = self._open
        acc[0] += time
        acc[1] += batch
        acc[2] += held
        acc[3] += tokens
        self._count += 1
        if self._count == self.bin_steps:
            self._close()

    def points(self) -> dict[str, list[float]]:
        """The bins so far (the last, partial one included) as lists of means."""
        out = {"time": list(self.time), "batch": list(self.batch), "held": list(self.held)}
        out["tokens"] = list(self.tokens)
        if self._count:
            for name, total in zip(("time", "batch", "held", "tokens"), self._open, strict=True):
                out[name].append(total / self._count)
        return out

    def _close(self) -> None:
        n = self._count
        for column, total in zip((self.time, self.batch, self.held, self.tokens), self._open, strict=True):
            column.append(total / n)
        self._open = [0.0, 0.0, 0.0, 0.0]
        self._count = 0
        if len(self.time) >= 2 * TREND_POINTS:
            for column in (self.time, self.batch, self.held, self.tokens):
                column[:] = [(a + b) / 2 for a, b in zip(column[::2], column[1::2], strict=True)]
            self.bin_steps *= 2


@dataclass(slots=True)
class RequestResults:
    """One entry per request, in request-list order; -1 (steps) or NaN (seconds) where the request had
    not arrived, been admitted, produced a token or finished when the run stopped (`max_time`)."""

    arrival_time: array
    output_len: array
    arrival_step: array
    first_admit_step: array
    finish_step: array
    first_token_time: array
    finish_time: array
    preemptions: array

    @classmethod
    def empty(cls, arrival_times: list[float], output_lens: list[int]) -> RequestResults:
        n = len(arrival_times)
        return cls(
            arrival_time=array("d", arrival_times),
            output_len=array("q", output_lens),
            arrival_step=array("q", [-1]) * n,
            first_admit_step=array("q", [-1]) * n,
            finish_step=array("q", [-1]) * n,
            first_token_time=array("d", [math.nan]) * n,
            finish_time=array("d", [math.nan]) * n,
            preemptions=array("q", [0]) * n,
        )

    def latencies(self) -> dict[str, list[float]]:
        """Each latency of `LATENCIES` over the finished requests (TPOT: those with > 1 output token)."""
        out: dict[str, list[float]] = {name: [] for name in LATENCIES}
        for arrival, first, finish, output in zip(
            self.arrival_time, self.first_token_time, self.finish_time, self.output_len, strict=True
        ):
            if math.isnan(finish):
                continue
            e2e = finish - arrival
            out["ttft"].append(first - arrival)
            out["e2e"].append(e2e)
            out["normalized"].append(e2e / output)
            if output > 1:
                out["tpot"].append((finish - first) / (output - 1))
        return out


@dataclass(slots=True)
class SimResult:
    """Everything one cache did with one request list.

    `series` holds every step only if the run kept it; `trend` (down-sampled) and `totals` (whole
    run) always exist, and `window_totals` for the window the run was given.
    """

    cache: str
    capacity_slots: int
    layout: str
    config: SimConfig
    totals: StepTotals
    trend: StepTrend
    requests: RequestResults
    counters: dict[str, int | float]
    end_time: float
    wall_s: float
    series: StepSeries | None = None
    window: tuple[float, float] | None = None
    window_totals: StepTotals | None = None

    @property
    def num_requests(self) -> int:
        return len(self.requests.arrival_step)

    @property
    def finished(self) -> int:
        return sum(1 for step in self.requests.finish_step if step >= 0)

    @property
    def arrival_step(self) -> list[int]:
        return list(self.requests.arrival_step)

    @property
    def first_admit_step(self) -> list[int]:
        return list(self.requests.first_admit_step)

    @property
    def finish_step(self) -> list[int]:
        return list(self.requests.finish_step)

    @property
    def preemptions(self) -> list[int]:
        return list(self.requests.preemptions)

    @property
    def latency_s(self) -> list[float]:
        """End-to-end latency of every request (NaN if unfinished)."""
        r = self.requests
        return [finish - arrival for arrival, finish in zip(r.arrival_time, r.finish_time, strict=True)]

    def step_totals(self, window: tuple[float, float] | None = None) -> StepTotals:
        """Sums and peaks over the whole run or `window` (the run's own window, or any window when the
        run kept its series)."""
        if window is None:
            return self.totals
        _check_window(window)
        if self.window is not None and tuple(window) == tuple(self.window) and self.window_totals:
            return self.window_totals
        if self.series is None:
            raise SimulationConfigError(
                f"window {tuple(window)!r}: this run kept no per-step series; pass window={tuple(window)!r} "
                "(or keep_series=True) to simulate()"
            )
        return self.series.totals(self.capacity_slots, window)

    def summary(self, window: tuple[float, float] | None = None) -> dict[str, Any]:
        return summarize(self, window)

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (NaN becomes None); per-step series only if the run kept them."""
        r = self.requests
        document: dict[str, Any] = {
            "cache": self.cache,
            "capacity_slots": self.capacity_slots,
            "layout": self.layout,
            "summary": _json_ready(self.summary(self.window)),
            "counters": dict(self.counters),
            "requests": {
                "arrival_step": list(r.arrival_step),
                "first_admit_step": list(r.first_admit_step),
                "finish_step": list(r.finish_step),
                "first_token_s": [_none_if_nan(t) for t in r.first_token_time],
                "finish_s": [_none_if_nan(t) for t in r.finish_time],
                "latency_s": [_none_if_nan(x) for x in self.latency_s],
                "preemptions": list(r.preemptions),
            },
        }
        if self.series is not None:
            document["series"] = self.series.to_dict()
        return document


def summarize(result: SimResult, window: tuple[float, float] | None = None) -> dict[str, Any]:
    """Means and peaks of the per-step metrics, latency percentiles, request counts and counters.

    `window` = ``(start_s, end_s)`` averages the per-step metrics over the steps that start in that
    time range only (e.g. the paper's steady state, 300-900 s); request-level numbers (finished,
    latencies) and counters always cover the whole run. Breakdown means are percentages of capacity;
    utilization of held memory is token-slot-steps / held-slot-steps.
    """
    totals = result.step_totals(window)
    capacity, steps = result.capacity_slots, totals.steps
    if not steps:
        raise OptionError(
            "window",
            window,
            f"contains no step of the {result.cache} run (it ran from 0 to {result.end_time:.1f} s); "
            "pick a window inside the run",
        )
    whole = result.totals
    latencies = {name: sorted(values) for name, values in result.requests.latencies().items()}
    generated = whole.batch
    summary: dict[str, Any] = {
        "cache": result.cache,
        "capacity_slots": capacity,
        "steps": steps,
        "window_s": list(window) if window else None,
        "sim_time_s": result.end_time,
        "requests": result.num_requests,
        "requests_finished": len(latencies["e2e"]),
        "tokens_generated": generated,
        "tokens_per_step": generated / whole.steps if whole.steps else 0.0,
        "tokens_per_s": generated / result.end_time if result.end_time > 0 else 0.0,
        "batch_mean": totals.batch / steps,
        "batch_peak": totals.batch_peak,
        "queue_mean": totals.queue / steps,
        "queue_peak": totals.queue_peak,
        "held_pct_mean": 100.0 * totals.held / (capacity * steps),
        "held_pct_peak": 100.0 * totals.held_peak / capacity,
        "token_util_of_held": totals.tokens / totals.held if totals.held else 0.0,
        "sharing_savings_pct": 100.0 * totals.saved / (totals.held + totals.saved) if totals.held else 0.0,
    }
    for name, value in totals.breakdown().items():
        summary[f"{name}_pct_mean"] = 100.0 * value / (capacity * steps)
    for name, values in latencies.items():
        summary[f"{name}_s_mean"] = _mean(values)
        for q in PERCENTILES:
            summary[f"{name}_s_p{q}"] = percentile(values, q)
    counters = dict(result.counters)
    queried = counters.get("prompt_tokens_queried", 0)
    summary["prefix_hit_rate"] = counters.get("prompt_hit_tokens", 0) / queried if queried else None
    summary["preemptions"] = sum(result.requests.preemptions)
    summary.update(counters)
    return summary


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile of already sorted values, interpolating between ranks (NaN if empty)."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def _check_window(window: tuple[float, float]) -> None:
    start, end = window
    if not start < end:
        raise SimulationConfigError(f"window {tuple(window)!r}: the start must be before the end")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


def _json_ready(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in summary.items()}
