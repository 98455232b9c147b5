"""Every paper simulation is an independent, picklable task; any map-like runner gives the same results."""

from __future__ import annotations

import dataclasses
import pickle
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from pagedkv.paper import reference
from pagedkv.paper.run import paper_tasks, run_paper
from pagedkv.paper.setting import PaperConfig, PaperSetting, paper_deployment
from pagedkv.paper.tasks import run_task

SHORT = {"duration": 120.0, "window": (40.0, 120.0), "seeds": (0, 1)}


def test_one_task_per_figure_seed_and_system(trace: str) -> None:
    config = PaperConfig(**SHORT, fig15_widths=(2, 4), fig18b_block_sizes=(16, 64))
    tasks = paper_tasks(config, trace)
    by_figure = {
        figure: [t for t in tasks if t.figure == figure] for figure in ("fig2", "fig13a", "fig15", "fig18b")
    }
    assert [len(group) for group in by_figure.values()] == [2 * 4, 2 * 4, 2 * 2 * 2, 2 * 2]
    assert [t.cache for t in by_figure["fig2"][:4]] == ["orca-max", "orca-pow2", "orca-oracle", "paged"]
    assert {(t.n, t.beam_width) for t in by_figure["fig15"]} == {(2, 1), (1, 2), (4, 1), (1, 4)}
    assert {t.setting.block_size for t in by_figure["fig18b"]} == {16, 64}
    assert {t.rate for t in by_figure["fig13a"]} == {2.0} and {t.seed for t in tasks} == {0, 1}
    assert pickle.loads(pickle.dumps(tasks)) == tasks  # picklable, and equal after the trip


def test_a_task_gives_the_same_measurement_every_time(trace: str) -> None:
    task = paper_tasks(PaperConfig(**SHORT, figures=("fig2",)), trace)[3]
    assert task.label == "fig2 seed 0: paged"
    first, second = run_task(task), run_task(pickle.loads(pickle.dumps(task)))
    assert first == second
    assert sum(first.shares.values()) == pytest.approx(100.0)
    assert first.mean_batch > 20 and first.steps > 1000


def test_any_map_like_runner_gives_the_same_results(trace: str) -> None:
    config = PaperConfig(**SHORT, figures=("fig2", "fig18b"), fig18b_block_sizes=(16, 128))

    def backwards(function: Any, tasks: Any) -> list[Any]:  # out of order, as a pool may return them
        return [function(task) for task in reversed(list(tasks))]

    serial = run_paper(config, trace).to_json()
    reordered = run_paper(config, trace, mapper=backwards).to_json()
    with ProcessPoolExecutor(max_workers=2) as pool:
        pooled = run_paper(config, trace, mapper=pool.map).to_json()
    for data in (reordered, pooled):
        assert {k: v for k, v in data.items() if k != "wall_seconds"} == {
            k: v for k, v in serial.items() if k != "wall_seconds"
        }


class _Counting:
    def __init__(self) -> None:
        self.total, self.done = 0, 0
        self.descriptions: list[str] = []

    def add_total(self, more: int) -> None:
        self.total += more

    def update(self, done: int = 1) -> None:
        self.done += done

    def set_description(self, desc: str) -> None:
        self.descriptions.append(desc)


def test_progress_advances_once_per_simulation(trace: str) -> None:
    progress = _Counting()
    run_paper(PaperConfig(**SHORT, figures=("fig13a",)), trace, progress=progress)  # type: ignore[arg-type]
    assert progress.total == progress.done == 2 * 4
    assert progress.descriptions[0] == "pagedkv paper: fig13a seed 0: orca-max"


def test_the_papers_external_category_takes_any_further_simulator_category(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    summary = {
        "token_states_pct_mean": 50.0,
        "reservation_pct_mean": 10.0,
        "internal_pct_mean": 5.0,
        "external_pct_mean": 20.0,
        "free_pct_mean": 15.0,
    }
    monkeypatch.setattr(
        reference, "BREAKDOWN", ("token_states", "reservation", "internal", "external", "free")
    )
    assert reference.paper_shares(summary) == {
        "token_states": 50.0,
        "reservation": 10.0,
        "internal": 5.0,
        "external": 35.0,  # external fragmentation & other: everything not in the first three
    }
    assert reference.CATEGORIES == ("token_states", "reservation", "internal", "external")


def test_the_scheduler_limits_reach_the_simulation(trace: str) -> None:
    capped = PaperSetting(paper_deployment(max_num_seqs=8))
    config = PaperConfig(**SHORT, figures=("fig13a",))
    task = next(t for t in paper_tasks(config, trace) if t.cache == "paged")
    free = run_task(task)
    held_back = run_task(dataclasses.replace(task, setting=capped))
    assert free.mean_batch > 20 and held_back.mean_batch <= 8 < free.mean_batch
