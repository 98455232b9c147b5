"""Run the simulation for the page: once to learn every run's length, once more to take the snapshots.

Why twice: frames sit on one clock shared by every cache (`frames`), which needs the end of the
longest run before any snapshot can be placed; a run of the simulator costs a fraction of a second
against seconds for the page, and the second pass is checked to reproduce the first exactly (the
simulator is deterministic: same requests, same seeds, fresh caches), so the snapshots, the metrics
shown beside them and the `SimResult` a user gets from `pagedkv simulate` are the same numbers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from pagedkv.errors import InvariantViolation
from pagedkv.progress import Progress
from pagedkv.simulator.cli import Run
from pagedkv.simulator.loop import compare
from pagedkv.simulator.metrics import SimResult
from pagedkv.watch.capture import Recorder, Track
from pagedkv.watch.frames import frame_times, steps_at


@dataclass(frozen=True)
class Recording:
    """A run as the page shows it: the frames, each cache's step at each frame, its result and track."""

    run: Run
    times: list[float]
    steps: dict[str, list[int]]
    results: dict[str, SimResult]
    tracks: dict[str, Track]


def record(run: Run, max_frames: int, progress: Progress | None = None) -> Recording:
    """Simulate `run` (its caches must not have run yet, and a paged one must keep its block tables:
    ``build_run(args, block_tables=True)``) and snapshot it at up to `max_frames` frames."""
    caches = run.caches
    fresh = [copy.deepcopy(cache) for cache in caches]
    first = compare(run.requests, caches, run.config, progress=progress)
    times = frame_times(first, max_frames)
    steps = {
        name: steps_at(times, result.series.time if result.series else []) for name, result in first.items()
    }
    recorders = {cache.name: Recorder(cache, set(steps[cache.name]) - {-1}) for cache in fresh}
    results = compare(run.requests, fresh, run.config, progress=progress, on_step=recorders.get)
    for name, result in results.items():
        if result.series is None or result.series != first[name].series:
            raise InvariantViolation(
                f"the {name} cache ran differently the second time: the simulator is not deterministic "
                "(a bug; please report it with the command line)"
            )
    tracks = {name: recorder.track() for name, recorder in recorders.items()}
    return Recording(run, times, steps, results, tracks)
