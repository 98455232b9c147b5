"""Run the selected figures of a `PaperConfig`: build every task, map `run_task` over them, group by figure.

Invariant: all tasks of one run draw their streams from the same trace file, and the only way they are
executed is the one ``mapper(run_task, tasks)`` call, so any map-like runner (the built-in ``map``, a
process pool's ``imap``, a Ray-backed map) gives the same results; grouping is by each measurement's
own task, so the runner may even return them out of order. The wall time covers loading, simulating
and explaining.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pagedkv.paper import reference, report
from pagedkv.paper.fig12 import run_fig12
from pagedkv.paper.results import BlockSizeResult, Breakdown, PaperResults, SharingResult
from pagedkv.paper.setting import PaperConfig
from pagedkv.paper.sharegpt import MAX_TOTAL_LEN, default_trace_path
from pagedkv.paper.tasks import Measurement, PaperTask, run_task, trace_pool
from pagedkv.progress import Progress

Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]
"""``mapper(fn, tasks)`` -> results, like the built-in ``map`` (`run_task` over `PaperTask`s, and Fig. 12's
`run_fig12_point` over its tasks)."""


def paper_tasks(config: PaperConfig, trace: str | os.PathLike[str]) -> list[PaperTask]:
    """One task per (figure, seed, system or sharing mode/width or block size), in a stable order."""

    def task(figure: str, cache: str, seed: int, rate: float, **variant: Any) -> PaperTask:
        return PaperTask(
            figure=figure,
            cache=cache,
            seed=seed,
            rate=rate,
            duration=config.duration,
            window=config.window,
            trace=os.fspath(trace),
            setting=variant.pop("setting", config.setting),
            time_model=config.time_model,
            beam_prune_prob=config.beam_prune_prob,
            **variant,
        )

    tasks: list[PaperTask] = []
    for seed in config.seeds:
        for figure, rate in (("fig2", config.fig2_rate), ("fig13a", config.fig13a_rate)):
            if figure in config.figures:
                tasks += [task(figure, system, seed, rate) for system in reference.SYSTEMS]
        if "fig15" in config.figures:
            for width in config.fig15_widths:
                tasks.append(task("fig15", "paged", seed, config.fig15_rate, n=width))
                tasks.append(task("fig15", "paged", seed, config.fig15_rate, beam_width=width))
        if "fig18b" in config.figures:
            tasks += [
                task("fig18b", "paged", seed, config.fig2_rate, setting=config.setting.with_block_size(size))
                for size in config.fig18b_block_sizes
            ]
    return tasks


def run_paper(
    config: PaperConfig,
    trace: str | os.PathLike[str] | None = None,
    *,
    mapper: Mapper = map,
    progress: Progress | None = None,
) -> PaperResults:
    """Everything `pagedkv paper` prints: the figures in `config.figures`, notes, setting, wall time.

    `progress` advances by one per finished simulation (its total is set here).
    """
    started = time.perf_counter()
    path = Path(trace) if trace is not None else default_trace_path()
    pairs = len(trace_pool(os.fspath(path)))  # parsed once here; in this process the tasks reuse it
    tasks = paper_tasks(config, path)
    if progress is not None:
        progress.add_total(len(tasks))
    measurements = list(_tracked(mapper(run_task, tasks), progress))
    results = PaperResults(setting=_setting(config, path, pairs), **_group(config, measurements))
    if "fig12" in config.figures:
        results.fig12 = run_fig12(config, path, mapper, progress)
    results.notes = report.explain(results, config)
    results.wall_seconds = time.perf_counter() - started
    return results


def _tracked(measurements: Iterable[Measurement], progress: Progress | None) -> Iterator[Measurement]:
    for measurement in measurements:
        if progress is not None:
            progress.set_description(f"pagedkv paper: {measurement.task.label}")
            progress.update(1)
        yield measurement


def group_key(task: PaperTask) -> tuple[str, str | int]:
    """Which number of a figure a task is one seed of: the system (Figs. 2, 13a), the sharing mode and
    width (Fig. 15: ``"parallel 4"``, ``"beam 4"``), the block size (Fig. 18b)."""
    if task.figure == "fig15":
        return task.figure, f"parallel {task.n}" if task.n > 1 else f"beam {task.beam_width}"
    if task.figure == "fig18b":
        return task.figure, task.setting.block_size
    return task.figure, task.cache


def _group(config: PaperConfig, measurements: list[Measurement]) -> dict[str, Any]:
    runs: dict[tuple[str, str | int], list[Measurement]] = {}
    for measurement in measurements:
        runs.setdefault(group_key(measurement.task), []).append(measurement)
    grouped: dict[str, Any] = {}
    for figure in ("fig2", "fig13a"):
        if figure in config.figures:
            grouped[figure] = {s: Breakdown.of(runs[figure, s]) for s in reference.SYSTEMS}
    if "fig15" in config.figures:
        grouped["fig15"] = {
            mode: {w: SharingResult.of(runs["fig15", f"{mode} {w}"]) for w in config.fig15_widths}
            for mode in reference.MODES
        }
    if "fig18b" in config.figures:
        grouped["fig18b"] = {
            size: BlockSizeResult.of(runs["fig18b", size]) for size in config.fig18b_block_sizes
        }
    return grouped


def _setting(config: PaperConfig, path: Path, pairs: int) -> dict[str, object]:
    setting = config.setting
    return {
        "description": setting.describe(),
        "time_model": config.time_model.describe(),
        "workload": (
            f"ShareGPT lengths of the paper's artifact ({pairs:,} pairs with prompt + output "
            f"< {MAX_TOTAL_LEN}, {path}), Poisson arrivals for {config.duration:g} s, measured over "
            f"{config.window[0]:g}-{config.window[1]:g} s, mean of {len(config.seeds)} seeds "
            f"{_seed_list(config.seeds)}"
        ),
        "model": setting.deployment.model.name,
        "gpu": setting.deployment.gpu.name,
        "kv_slots": setting.num_slots,
        "num_blocks": setting.num_blocks,
        "block_size": setting.block_size,
        "max_num_batched_tokens": setting.deployment.batched_tokens,
        "duration_s": config.duration,
        "window_s": list(config.window),
        "seeds": list(config.seeds),
        "rates": {"fig2": config.fig2_rate, "fig13a": config.fig13a_rate, "fig15": config.fig15_rate},
        "beam_prune_prob": config.beam_prune_prob,
        "fig12": {
            "panels": list(config.fig12_panels),
            "duration_s": config.fig12_duration,
            "warmup_s": config.fig12_warmup,
            "threshold_s": config.fig12_threshold,
            "sensitivity_thresholds_s": list(config.fig12_thresholds[1:]),
            "tolerance": config.fig12_tolerance,
            "start_rate": config.fig12_start_rate,
        },
    }


def _seed_list(seeds: tuple[int, ...]) -> str:
    if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))
