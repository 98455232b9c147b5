"""Per-step series of one run, and the summary computed from them.

Every step records the state at its end, after this step's tokens are written and before the
requests that finish in it free their memory (so a step's peak usage is what it shows):

- ``time``: when the step started (s); ``batch``: sequences that generated a token in it;
  ``queue``: requests waiting to be admitted or swapped back in;
- ``held``: KV slots held; ``tokens``: slots holding a token's KV (a shared block counted once);
- ``internal``, ``padding``, ``saved``: see `cache`.

Invariant: for every step, ``tokens + reservation + internal + padding == held <= capacity`` with
all four terms >= 0, so the breakdown of capacity into token states / reservation / internal
fragmentation / external fragmentation & other always sums to 100 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pagedkv.simulator.config import SimConfig, SimulationConfigError

BREAKDOWN = ("token_states", "reservation", "internal", "external")
BREAKDOWN_LABELS = {
    "token_states": "token states",
    "reservation": "reservation",
    "internal": "internal fragmentation",
    "external": "external fragmentation & other",
}


@dataclass(slots=True)
class StepSeries:
    """One list per metric, one entry per step (see the module docstring)."""

    time: list[float] = field(default_factory=list)
    batch: list[int] = field(default_factory=list)
    queue: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    internal: list[int] = field(default_factory=list)
    padding: list[int] = field(default_factory=list)
    saved: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.time)

    def reservation(self) -> list[int]:
        """Slots reserved for tokens not generated yet, per step."""
        return [
            h - p - t - i
            for h, p, t, i in zip(self.held, self.padding, self.tokens, self.internal, strict=True)
        ]

    def external(self, capacity: int) -> list[int]:
        """Slots that are free, left over, or lost to placement (holes, rounding), per step."""
        return [capacity - h + p for h, p in zip(self.held, self.padding, strict=True)]

    def breakdown(self, capacity: int) -> dict[str, list[int]]:
        """The four waste categories in slots, per step; they sum to `capacity` at every step."""
        return {
            "token_states": list(self.tokens),
            "reservation": self.reservation(),
            "internal": list(self.internal),
            "external": self.external(capacity),
        }

    def to_dict(self) -> dict[str, list[Any]]:
        return {name: list(getattr(self, name)) for name in self.__slots__}


@dataclass(slots=True)
class SimResult:
    """Everything one cache did with one request list.

    Per-request lists follow the request list's order (index == request id for generated and loaded
    workloads); -1 (steps) or NaN (seconds) mark requests that had not arrived, been admitted or
    finished when the run stopped (`SimConfig.max_time` / `max_steps`).
    """

    cache: str
    capacity_slots: int
    layout: str
    config: SimConfig
    series: StepSeries
    arrival_step: list[int]
    first_admit_step: list[int]
    finish_step: list[int]
    latency_s: list[float]
    preemptions: list[int]
    counters: dict[str, int | float]
    end_time: float
    wall_s: float

    @property
    def num_requests(self) -> int:
        return len(self.arrival_step)

    @property
    def finished(self) -> int:
        return sum(1 for step in self.finish_step if step >= 0)

    def summary(self, window: tuple[float, float] | None = None) -> dict[str, Any]:
        return summarize(self, window)

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (NaN latencies become None)."""
        return {
            "cache": self.cache,
            "capacity_slots": self.capacity_slots,
            "layout": self.layout,
            "summary": _json_ready(self.summary()),
            "counters": dict(self.counters),
            "series": self.series.to_dict(),
            "requests": {
                "arrival_step": list(self.arrival_step),
                "first_admit_step": list(self.first_admit_step),
                "finish_step": list(self.finish_step),
                "latency_s": [None if math.isnan(x) else x for x in self.latency_s],
                "preemptions": list(self.preemptions),
            },
        }


def summarize(result: SimResult, window: tuple[float, float] | None = None) -> dict[str, Any]:
    """Means and peaks of every per-step metric, plus request-level results and counters.

    `window` = ``(start_s, end_s)`` averages the per-step metrics over the steps that start in that
    time range only (e.g. the paper's steady state, 300-900 s); request-level numbers (finished,
    latency) and counters always cover the whole run. Breakdown means are percentages of capacity;
    utilization of held memory is token-slot-steps / held-slot-steps.
    """
    series, capacity = result.series, result.capacity_slots
    index = _window_index(series, window)
    steps = len(index)
    if not steps:
        raise SimulationConfigError(
            f"window {window!r} contains no step of the {result.cache} run "
            f"(it ran from 0 to {result.end_time:.1f} s); pick a window inside the run"
        )
    pick = (lambda values: values) if steps == len(series) else (lambda values: [values[i] for i in index])
    held, tokens, saved = pick(series.held), pick(series.tokens), pick(series.saved)
    batch, queue = pick(series.batch), pick(series.queue)
    breakdown = {name: pick(values) for name, values in series.breakdown(capacity).items()}
    finished = [i for i, step in enumerate(result.finish_step) if step >= 0]
    latency_steps = [result.finish_step[i] - result.arrival_step[i] + 1 for i in finished]
    latency_s = sorted(result.latency_s[i] for i in finished)
    generated = sum(result.series.batch)
    summary: dict[str, Any] = {
        "cache": result.cache,
        "capacity_slots": capacity,
        "steps": steps,
        "window_s": list(window) if window else None,
        "sim_time_s": result.end_time,
        "requests": result.num_requests,
        "requests_finished": len(finished),
        "tokens_generated": generated,
        "tokens_per_step": generated / len(series) if len(series) else 0.0,
        "tokens_per_s": generated / result.end_time if result.end_time > 0 else 0.0,
        "latency_steps_mean": _mean(latency_steps),
        "latency_s_mean": _mean(latency_s),
        "latency_s_p90": latency_s[int(0.9 * (len(latency_s) - 1))] if latency_s else math.nan,
        "batch_mean": sum(batch) / steps,
        "batch_peak": max(batch),
        "queue_mean": sum(queue) / steps,
        "queue_peak": max(queue),
        "held_pct_mean": 100.0 * sum(held) / (capacity * steps),
        "held_pct_peak": 100.0 * max(held) / capacity,
        "token_util_of_held": sum(tokens) / sum(held) if sum(held) else 0.0,
        "sharing_savings_pct": 100.0 * sum(saved) / (sum(held) + sum(saved)) if sum(held) else 0.0,
    }
    for name, values in breakdown.items():
        summary[f"{name}_pct_mean"] = 100.0 * sum(values) / (capacity * steps)
        summary[f"{name}_pct_peak"] = 100.0 * max(values) / capacity
    counters = dict(result.counters)
    queried = counters.get("prompt_tokens_queried", 0)
    summary["prefix_hit_rate"] = counters.get("prompt_hit_tokens", 0) / queried if queried else None
    summary["preemptions"] = sum(result.preemptions)
    summary.update(counters)
    return summary


def _window_index(series: StepSeries, window: tuple[float, float] | None) -> range | list[int]:
    if window is None:
        return range(len(series))
    start, end = window
    if not start < end:
        raise SimulationConfigError(f"window {window!r}: the start must be before the end")
    return [i for i, t in enumerate(series.time) if start <= t < end]


def _mean(values: list[float] | list[int]) -> float:
    return sum(values) / len(values) if values else math.nan


def _json_ready(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in summary.items()}
