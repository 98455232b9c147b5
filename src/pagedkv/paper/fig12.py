"""The paper's Fig. 12 (ShareGPT row): normalized latency against request rate for Orca (Max), (Pow2),
(Oracle) and vLLM, and the ratio of the rates they sustain -- found by the planner's search.

Invariant: every simulation is a `Fig12Task` run by `run_fig12_point` through the run's ``mapper``, on
the stream and setting every other figure uses (`poisson_stream` of the artifact's ShareGPT lengths, the
artifact's scheduler and caches, the simulator's roofline at the run's efficiencies), so Fig. 12 depends
on no constant of its own but the measurement the artifact made: requests arriving after the 60-s
warm-up of a 600-s stream, each served to its end, and their mean normalized latency (end to end /
output tokens), as ``plot_fig12.py`` computes it. A system *sustains* a rate when that mean, pooled
over the seeds, is within the threshold (1 s/token: the artifact's y-axis limit); the planner's keep-up
check is off, as the paper judged by latency alone. `pagedkv.plan.search` brackets and bisects each
system's rate for the threshold and for each sensitivity threshold; searches of one system share its
simulations.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pagedkv.paper import reference
from pagedkv.paper.results import Fig12Panel, Fig12Ratio, Fig12System, Spread
from pagedkv.paper.setting import PaperConfig, PaperSetting
from pagedkv.paper.sharegpt import poisson_stream
from pagedkv.paper.tasks import artifact_config, system_cache, trace_pool
from pagedkv.plan.knees import seed_knees
from pagedkv.plan.measure import PointResult, measure, measured_window
from pagedkv.plan.search import Points, RateSearch, run_searches
from pagedkv.plan.slo import Slo
from pagedkv.plan.verdict import judge, pooled_metrics
from pagedkv.progress import Progress
from pagedkv.simulator import simulate
from pagedkv.simulator.roofline import RooflineStepTime

SENSITIVITY_TOLERANCE = 0.05  # the sensitivity thresholds' searches stop within 5 %: they show a trend

Mapper = Callable[[Callable[["Fig12Task"], PointResult], Iterable["Fig12Task"]], Iterable[PointResult]]


@dataclass(frozen=True, slots=True)
class Fig12Task:
    """System `cache` of panel `panel` serving seed `seed`'s ShareGPT stream of `duration` s at `rate`."""

    panel: str
    cache: str
    seed: int
    rate: float
    duration: float
    warmup: float
    trace: str
    setting: PaperSetting
    time_model: RooflineStepTime

    @property
    def label(self) -> str:
        return f"fig12 {self.panel} seed {self.seed}: {self.cache} at {self.rate:.3g} req/s"


def run_fig12_point(task: Fig12Task) -> PointResult:
    """Simulate `task` to the last request's end and measure the requests arriving after the warm-up."""
    requests = poisson_stream(trace_pool(task.trace), task.rate, task.duration, task.seed)
    arrivals = [r.arrival_time for r in requests]
    first = min(bisect.bisect_left(arrivals, task.warmup), len(requests) - 1)
    config = artifact_config(task.setting, task.time_model, task.seed)
    window = measured_window(requests, first, len(requests))
    cache = system_cache(task.cache, task.setting)
    result = simulate(requests, cache, config, keep_series=False, window=window)
    return measure((task.panel, task.cache), task.rate, task.seed, requests, result, first, len(requests))


def run_fig12(
    config: PaperConfig,
    trace: str | os.PathLike[str],
    mapper: Mapper,
    progress: Progress | None = None,
) -> dict[str, Fig12Panel]:
    """Every panel of `config.fig12_panels`: each system's curve, sustained rate and the ratios."""
    settings = {panel: config.fig12_setting(panel) for panel in config.fig12_panels}
    time_models = {panel: config.fig12_time_model(panel) for panel in config.fig12_panels}

    def tasks_for(key: object, rate: float) -> list[Fig12Task]:
        assert isinstance(key, tuple)
        panel, system = key
        return [
            Fig12Task(
                panel,
                system,
                seed,
                rate,
                config.fig12_duration,
                config.fig12_warmup,
                os.fspath(trace),
                settings[panel],
                time_models[panel],
            )
            for seed in config.seeds
        ]

    searches = {
        (panel, system, threshold): RateSearch(
            config.fig12_start_rate,
            config.fig12_tolerance if threshold == config.fig12_threshold else SENSITIVITY_TOLERANCE,
        )
        for panel in config.fig12_panels
        for system in reference.SYSTEMS
        for threshold in config.fig12_thresholds
    }
    points: Points = {}
    run_searches(
        searches,
        lambda key: key[:2],
        tasks_for,
        run_fig12_point,
        lambda key, seeds: judge(seeds, (_slo(key[2]),), keep_up=False),
        mapper,
        points,
        progress,
    )
    return {
        panel: _panel(
            config, settings[panel], {k[1:]: s for k, s in searches.items() if k[0] == panel}, points
        )
        for panel in config.fig12_panels
    }


def _slo(threshold: float) -> Slo:
    return Slo("mean", "normalized", threshold)


def _panel(
    config: PaperConfig,
    setting: PaperSetting,
    searches: dict[tuple[str, float], RateSearch],
    points: Points,
) -> Fig12Panel:
    panel = setting.deployment.model.name
    threshold = config.fig12_threshold
    systems = {}
    knees = {}
    for system in reference.SYSTEMS:
        search = searches[system, threshold]
        tried = sorted(rate for key, rate in points if key == (panel, system))
        evaluations = [(rate, points[(panel, system), rate]) for rate in tried]
        knees[system] = seed_knees(evaluations, (_slo(threshold),), keep_up=False)
        systems[system] = Fig12System(
            rate=search.lo,
            next_rate=search.hi,
            seed_rates=_finite_spread(knees[system].values()),
            batch_mean=_batch(points, (panel, system), search.lo),
            curve=tuple(_curve_point(rate, seeds) for rate, seeds in evaluations),
        )
    vllm = systems["paged"].rate
    ratios = {
        system: Fig12Ratio(
            pooled=_ratio(vllm, systems[system].rate),
            seeds=_finite_spread(_ratio(knees["paged"][seed], knee) for seed, knee in knees[system].items()),
        )
        for system in reference.ORCA
    }
    sensitivity = {
        t: {system: searches[system, t].lo for system in reference.SYSTEMS} for t in config.fig12_thresholds
    }
    return Fig12Panel(setting.describe(), systems, ratios, sensitivity)


def _curve_point(rate: float, seeds: list[PointResult]) -> tuple[float, float, float, float]:
    """(rate, mean normalized latency of the seeds' measured requests pooled, lowest seed, highest seed)."""
    check = judge(seeds, (_slo(1.0),), keep_up=False).checks[0]  # the bound plays no part in the values
    return rate, check.value, check.low, check.high


def _batch(points: Points, key: tuple[str, str], rate: float | None) -> float:
    return math.nan if rate is None else pooled_metrics(points[key, rate])["batch_mean"]


def _ratio(numerator: float | None, denominator: float | None) -> float:
    if numerator is None or denominator is None or not denominator or math.isinf(denominator):
        return math.nan
    return numerator / denominator


def _finite_spread(values: Iterable[float]) -> Spread | None:
    """The spread of the values that are finite numbers > 0 (a knee outside the rates tried is not)."""
    kept = [v for v in values if math.isfinite(v) and v > 0]
    return Spread.of(kept) if kept else None
