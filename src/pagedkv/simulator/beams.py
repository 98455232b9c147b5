"""The simulator's beam-search model: which beams are pruned when, and which beam replaces each.

The simulator has no logits, so beam search is a random process with the sharing structure of the
real one: in every decode step each of the k beams is, independently with probability `p`, pruned and
replaced by a second continuation of another beam picked uniformly (a `fork` of it). Beams then share
the blocks of their common ancestors, as real beams do, and every fork is followed by a copy-on-write
of the shared, partly filled last block.

Invariant: one `random.Random` per request, seeded by the run's seed and the request id, and drawn in
a fixed order (per step: pruned beams in index order, each drawing its parent then its next pruning
time), so every cache in a comparison sees the identical beams, and a preempted request resumes the
same stream.
"""

from __future__ import annotations

import math
import random


class BeamModel:
    """The pruning schedule of one request's `num_beams` beams (decode ticks, as the loop counts them)."""

    __slots__ = ("_prob", "_rng", "prune_ticks")

    def __init__(self, prob: float, seed: int, request_id: int) -> None:
        self._prob = prob
        self._rng = random.Random(seed * 1_000_003 + request_id)
        self.prune_ticks: list[int] = []

    def restart(self, tick: int, num_beams: int) -> None:
        """(Re)admission at `tick`: every beam draws its next pruning tick."""
        self.prune_ticks = [tick + self._ticks_to_prune() for _ in range(num_beams)]

    @property
    def next_tick(self) -> int:
        """The first tick at which some beam is pruned."""
        return min(self.prune_ticks)

    def prune(self, tick: int) -> list[tuple[int, int]]:
        """The beams pruned at `tick`, each as ``(beam index, index of the beam it becomes a fork of)``.

        Parents are indices into the beams as they stood before this tick (a parent pruned in the same
        tick still gives its old contents).
        """
        forks = []
        ticks = self.prune_ticks
        for i, at in enumerate(ticks):
            if at != tick:
                continue
            j = self._rng.randrange(len(ticks) - 1)
            forks.append((i, j + (j >= i)))
            ticks[i] = tick + self._ticks_to_prune()
        return forks

    def _ticks_to_prune(self) -> int:
        """Decode ticks until a beam is pruned: geometric, one Bernoulli(p) trial a tick."""
        p = self._prob
        if p >= 1.0:
            return 1
        return int(math.log(1.0 - self._rng.random()) / math.log(1.0 - p)) + 1
