"""The search for the highest sustained request rate: bracketing, then bisection, round by round.

`RateSearch` is one configuration's state: the highest rate that sustained so far (``lo``) and the
lowest that did not (``hi``). It proposes ``start`` first; while only failures are known it halves the
lowest failure, while only successes are known it doubles the highest success (bracketing); once both
are known it proposes their geometric midpoint (bisection: rates are ratios, so the bracket shrinks by
the same factor whatever the scale), and it stops when ``hi / lo <= 1 + tolerance``. The answer is
``lo``: the highest rate that sustained, with the knee somewhere below ``hi``, within the tolerance.

Noise is handled monotonically: a rate is only ever tried inside the current bracket, so every rate
that sustained lies below every rate that did not, and the answer never depends on a lucky point
above a failure. (Within one seed the streams are common random numbers -- the same requests, the
arrival times scaled by 1 / rate -- so measured latency rises with rate all but monotonically, and
the pooled seeds smooth what is left.)

It never loops for ever: halving stops at ``start / 32`` (a configuration that does not sustain that
sustains no rate: `Status.NONE`), doubling at ``start x 8`` (`Status.ABOVE`), and bisection of a factor-2
bracket stops at the tolerance after ceil(log2(log 2 / log(1 + tolerance))) steps (6 for 2 %), so a
search makes at most 6 + that + 1 proposals.

`run_searches` runs many searches together: each round collects every search's next rate, simulates
every (configuration, rate, seed) not simulated yet in one ``mapper`` call (so a round uses every core,
or a Ray cluster), and records one verdict per search. Searches that share a configuration (the same
curve judged against different thresholds) share its points.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import TypeVar

from pagedkv.plan.measure import PointResult
from pagedkv.plan.verdict import Verdict
from pagedkv.progress import Progress

T = TypeVar("T")
S = TypeVar("S", bound=Hashable)

FLOOR = 1 / 32  # the lowest rate tried, as a fraction of the start
CEILING = 8.0  # the highest rate tried, as a multiple of the start

Points = dict[tuple[Hashable, float], list[PointResult]]
"""Every simulated point: (configuration key, rate) -> its seeds' results, sorted by seed."""
Mapper = Callable[[Callable[[T], PointResult], Iterable[T]], Iterable[PointResult]]


class Status(enum.Enum):
    RUNNING = "running"
    FOUND = "found"  # lo sustained, hi did not, hi / lo <= 1 + tolerance
    NONE = "none"  # no rate down to start x FLOOR sustained
    ABOVE = "above"  # every rate up to start x CEILING sustained


class RateSearch:
    """Bracketing then bisection over request rate for one configuration (see the module docstring)."""

    def __init__(self, start: float, tolerance: float) -> None:
        if not (math.isfinite(start) and start > 0):
            raise ValueError(f"start rate {start!r} must be a finite number > 0")
        if not (0 < tolerance < 1):
            raise ValueError(f"tolerance {tolerance!r} must be in (0, 1)")
        self.start, self.tolerance = start, tolerance
        self.lo: float | None = None  # the highest rate that sustained
        self.hi: float | None = None  # the lowest rate that did not
        self.verdicts: dict[float, Verdict] = {}

    def next_rate(self) -> float | None:
        """The rate to try next, or None when the search is over (`status` says how)."""
        lo, hi = self.lo, self.hi
        if lo is None and hi is None:
            return self.start
        if lo is None:
            assert hi is not None
            rate = hi / 2
            return rate if rate >= self.start * FLOOR * (1 - 1e-9) else None
        if hi is None:
            rate = lo * 2
            return rate if rate <= self.start * CEILING * (1 + 1e-9) else None
        if hi / lo <= 1 + self.tolerance:
            return None
        return math.sqrt(lo * hi)

    def record(self, rate: float, verdict: Verdict) -> None:
        """The verdict on `rate`, a rate `next_rate` proposed (so it lies inside the bracket)."""
        if (self.lo is not None and rate <= self.lo) or (self.hi is not None and rate >= self.hi):
            raise ValueError(f"rate {rate!r} lies outside the bracket ({self.lo!r}, {self.hi!r})")
        self.verdicts[rate] = verdict
        if verdict.sustains:
            self.lo = rate
        else:
            self.hi = rate

    @property
    def status(self) -> Status:
        if self.next_rate() is not None:
            return Status.RUNNING
        if self.lo is None:
            return Status.NONE
        if self.hi is None:
            return Status.ABOVE
        return Status.FOUND


def run_searches(
    searches: Mapping[S, RateSearch],
    configuration: Callable[[S], Hashable],
    tasks_for: Callable[[Hashable, float], list[T]],
    fn: Callable[[T], PointResult],
    judge: Callable[[S, list[PointResult]], Verdict],
    mapper: Mapper[T],
    points: Points,
    progress: Progress | None = None,
) -> None:
    """Run every search to its end, round by round (see the module docstring). ``configuration(s)``
    names the points search ``s`` is judged on; ``tasks_for(configuration, rate)`` are their tasks (one
    per seed), which ``fn`` simulates; new points are added to `points` (points already there are
    reused, never simulated again)."""
    round_number = 0
    while True:
        proposals = {
            key: rate for key, search in searches.items() if (rate := search.next_rate()) is not None
        }
        if not proposals:
            return
        round_number += 1
        if progress is not None:
            progress.set_description(f"round {round_number}: {len(proposals)} searches")
        pairs = {(configuration(key), rate) for key, rate in proposals.items()}
        evaluate(sorted(pairs, key=repr), tasks_for, fn, mapper, points, progress)
        for key, rate in proposals.items():
            searches[key].record(rate, judge(key, points[configuration(key), rate]))


def evaluate(
    pairs: Iterable[tuple[Hashable, float]],
    tasks_for: Callable[[Hashable, float], list[T]],
    fn: Callable[[T], PointResult],
    mapper: Mapper[T],
    points: Points,
    progress: Progress | None = None,
) -> None:
    """Simulate every (configuration, rate) of `pairs` not in `points` yet, all in one ``mapper`` call."""
    todo = [pair for pair in dict.fromkeys(pairs) if pair not in points]
    tasks = [task for configuration, rate in todo for task in tasks_for(configuration, rate)]
    if progress is not None:
        progress.add_total(len(tasks))
    fresh: Points = {pair: [] for pair in todo}
    for result in _tracked(mapper(fn, tasks), progress):
        fresh[result.key, result.rate].append(result)
    for pair, results in fresh.items():
        points[pair] = sorted(results, key=lambda r: r.seed)


def _tracked(results: Iterable[PointResult], progress: Progress | None) -> Iterator[PointResult]:
    for result in results:
        if progress is not None:
            progress.update(1)
        yield result
