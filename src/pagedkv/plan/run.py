"""A whole plan: for every configuration, the throughput at saturation, then the search for the highest
rate it sustains under the SLOs (`pagedkv.plan.verdict`), every simulation through one mapper.

Invariant: a `Plan` is validated on creation -- configurations, SLOs, seeds, stream length, tolerance
-- and `run_plan` only simulates; every simulation is a `PointTask` run by ``mapper(run_point, tasks)``
(the built-in ``map``, a process pool, `pagedkv.runner.task_map` on Ray), whose results are grouped
by their own (configuration, rate, seed), so the outcome is the same whichever mapper runs them.

The order of work: (1) configurations whose SLO is below one engine step (the fastest step the time
model allows: one sequence, nothing else) are unsustainable at any load and are not simulated;
(2) every other configuration serves its seeds' streams with every request arriving at once, and the
completion rate of that saturated run is its throughput; (3) the searches (`pagedkv.plan.search`)
start at half that throughput and run round by round together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from pagedkv.errors import UsageError
from pagedkv.plan.configurations import Configuration, build_configurations, build_runs
from pagedkv.plan.measure import PointResult
from pagedkv.plan.point import MEASURED, PointTask, measured_range, run_point
from pagedkv.plan.search import Points, RateSearch, Status, evaluate, run_searches
from pagedkv.plan.slo import Slo, format_seconds, parse_slos
from pagedkv.plan.verdict import Verdict, judge
from pagedkv.progress import Progress
from pagedkv.simulator.cli import Run
from pagedkv.simulator.config import StepTimeModel

DEFAULT_TOLERANCE = 0.02
DEFAULT_SEEDS = (0, 1, 2)
MIN_REQUESTS = 2000
"""Requests a stream at least has: its measured 80 % must span many request lifetimes at the rates a
search tries, so that the batch, the queue and the KV cache reach the level that rate sustains."""

Mapper = Callable[[Callable[[PointTask], PointResult], Iterable[PointTask]], Iterable[PointResult]]


@dataclass(frozen=True)
class Plan:
    """What to plan: the configurations with each one's `pagedkv simulate` run (checked: model, KV slots,
    step time, the trace), the SLOs, the seeds pooled at every rate, the requests of each seed's stream,
    and the search's relative tolerance. `build_plan` makes one from options."""

    configurations: tuple[Configuration, ...]
    runs: tuple[Run, ...]  # each configuration's simulate run as built (the model, KV slots, step time)
    slos: tuple[Slo, ...]
    seeds: tuple[int, ...]
    num_requests: int
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        if not self.configurations or len(self.runs) != len(self.configurations):
            raise UsageError("a plan needs at least one configuration, each with its run")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UsageError(f"--seeds {','.join(map(str, self.seeds))}: give distinct seeds, at least one")
        if self.num_requests < 10:
            raise UsageError(f"--num-requests {self.num_requests}: a stream needs at least 10 requests")
        if not 0 < self.tolerance < 1:
            raise UsageError(f"--tolerance {self.tolerance:g}: must be in (0, 1), e.g. 0.02 for 2 %")

    @property
    def measured_requests(self) -> int:
        """Measured requests at every rate, all seeds together."""
        first, last = measured_range(self.num_requests)
        return len(self.seeds) * (last - first)

    def tasks(self, key: object, rate: float) -> list[PointTask]:
        """One task per seed for configuration `key` (its index) at `rate`."""
        assert isinstance(key, int)
        configuration = self.configurations[key]
        argv, synthetic = configuration.argv, configuration.synthetic
        return [PointTask(key, argv, rate, seed, self.num_requests, synthetic) for seed in self.seeds]

    def kv_slots(self, index: int) -> int:
        """Configuration `index`'s KV capacity in token slots."""
        return self.runs[index].caches[0].capacity_slots


@dataclass
class ConfigurationResult:
    """What the plan found for one configuration."""

    configuration: Configuration
    impossible: str = ""  # why no rate can sustain the SLOs, when that is known without simulating
    saturation_rate: float = math.nan  # completions per second with every request queued at once
    search: RateSearch | None = None
    points: Points = field(default_factory=dict)

    @property
    def status(self) -> Status:
        return Status.NONE if self.search is None else self.search.status

    @property
    def max_rate(self) -> float | None:
        """The highest rate that sustained (None when none did)."""
        return None if self.search is None else self.search.lo

    @property
    def next_rate(self) -> float | None:
        """The lowest rate that did not sustain (None when every rate tried did)."""
        return None if self.search is None else self.search.hi

    def evaluations(self) -> list[tuple[float, Verdict, list[PointResult]]]:
        """Every rate tried, in increasing order, with its verdict and its seeds' results."""
        if self.search is None:
            return []
        index = self.configuration.index
        return [(rate, v, self.points[index, rate]) for rate, v in sorted(self.search.verdicts.items())]

    def why_none(self) -> str:
        """Why no rate sustains (for `Status.NONE`)."""
        if self.impossible:
            return self.impossible
        assert self.search is not None
        lowest = min(self.search.verdicts)
        failures = "; ".join(self.search.verdicts[lowest].failures())
        return (
            f"even at {lowest:.3g} req/s ({lowest / self.saturation_rate:.1%} of the throughput at "
            f"saturation, a nearly idle deployment): {failures}"
        )


def build_plan(
    options: Mapping[str, Any],
    compare: Sequence[str] = (),
    slos: Sequence[str] = (),
    seeds: Sequence[int] = DEFAULT_SEEDS,
    num_requests: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Plan:
    """A plan from `pagedkv simulate` options by name (``{"model": "Llama-3.1-8B", "trace": path}``), the
    ``--compare`` axes (``"block-size=16,32"``) and the ``--slo`` texts (``"p99:ttft=2s"``), every one
    checked as the command checks it (`UsageError` naming the flag)."""
    parsed = parse_slos(slos)
    count = num_requests if num_requests is not None else default_num_requests(parsed, len(seeds))
    configurations = build_configurations(options, compare)
    runs = build_runs(configurations, count)
    return Plan(tuple(configurations), tuple(runs), parsed, tuple(seeds), count, tolerance)


def default_num_requests(slos: Sequence[Slo], seeds: int) -> int:
    """Enough requests a stream for every SLO's statistic over the measured requests of all seeds
    (`Slo.required_requests`), and at least `MIN_REQUESTS`."""
    share = MEASURED[1] - MEASURED[0]
    needed = max((slo.required_requests for slo in slos), default=0)
    return max(MIN_REQUESTS, math.ceil(needed / (share * seeds)))


def one_step_s(time_model: StepTimeModel) -> float:
    """The fastest step the time model allows: one sequence decoding, or one prompt token, nothing else.
    Every latency a request sees is at least one step, so an SLO below it is met at no rate."""
    return min(time_model(1, 0, 0), time_model(0, 1, 0))


def run_plan(plan: Plan, mapper: Mapper = map, progress: Progress | None = None) -> list[ConfigurationResult]:
    """Search every configuration of `plan` (see the module docstring); results in configuration order."""
    results = [ConfigurationResult(c, impossible_reason(plan, c.index)) for c in plan.configurations]
    live = [r for r in results if not r.impossible]
    points: Points = {}
    evaluate(
        [(r.configuration.index, math.inf) for r in live], plan.tasks, run_point, mapper, points, progress
    )
    searches = {}
    for result in live:
        index = result.configuration.index
        result.saturation_rate = fmean(p.completion_rate for p in points[index, math.inf])
        result.search = searches[index] = RateSearch(result.saturation_rate / 2, plan.tolerance)
    run_searches(
        searches,
        lambda key: key,
        plan.tasks,
        run_point,
        lambda _key, seeds: judge(seeds, plan.slos),
        mapper,
        points,
        progress,
    )
    for result in live:
        index = result.configuration.index
        result.points = {key: value for key, value in points.items() if key[0] == index}
    return results


def impossible_reason(plan: Plan, index: int) -> str:
    """Why configuration `index` can meet the SLOs at no rate, known without simulating (or \"\")."""
    step = one_step_s(plan.runs[index].config.step_time)
    below = [slo for slo in plan.slos if slo.bound_s < step]
    if not below:
        return ""
    listed = ", ".join(slo.describe() for slo in below)
    return f"{listed}: below one engine step ({format_seconds(step)}, one sequence and nothing else)"
