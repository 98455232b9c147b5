"""Which moments the page shows: frames on one clock shared by every cache.

The caches run the same requests at different speeds (the naive one takes about twice the steps of
the paged one), so panels are aligned by *simulated time*, not by step: frame ``i`` is the moment
``times[i]``, and each cache shows its state at the end of the last step that started at or before
it (the cache's last step once it has finished; none before its first step).

Invariant: there are at most `max_frames` frames. When every step of every run fits, the frames are
exactly the distinct step start times (nothing is skipped: each copy-on-write and each block is seen);
otherwise they are `max_frames` evenly spaced times from the first step's start to the last one's, both
included, so the first and the final state of the longest run are always shown.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

from pagedkv.errors import InvalidArgument
from pagedkv.simulator.metrics import SimResult


def frame_times(results: Mapping[str, SimResult], max_frames: int) -> list[float]:
    """The frames' simulated times (seconds, ascending) for these runs."""
    if max_frames < 2:
        raise InvalidArgument(f"max_frames={max_frames} must be >= 2 (the first and the last step)")
    starts = sorted({t for result in results.values() if result.series for t in result.series.time})
    if not starts:
        raise InvalidArgument("no run recorded a step: nothing to show")
    if len(starts) <= max_frames:
        return starts
    first, last = starts[0], starts[-1]
    span = last - first
    return [first + span * i / (max_frames - 1) for i in range(max_frames - 1)] + [last]


def steps_at(times: Sequence[float], step_times: Sequence[float]) -> list[int]:
    """For each frame time, the last step starting at or before it (-1 before the first step)."""
    return [bisect.bisect_right(step_times, t) - 1 for t in times]
