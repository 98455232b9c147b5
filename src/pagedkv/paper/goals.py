"""The fidelity goals of the reproduction, as predicates the report prints and the tests assert.

Invariant: each goal is checked only against a number the paper prints; where the paper prints a ranking
or a range instead, the goal compares orderings, never invented values.

Goals (issue 4): every Figure 2 category within 3 points of the paper; Figure 13a within 15 %; the same
ranking in Figure 15 (savings grow with n and with beam width, and beam search saves more than parallel
sampling at every width) and in Figure 18b (from 16 tokens up, larger blocks waste more).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise

FIG2_POINTS = 3.0
FIG13A_RELATIVE = 0.15


def fig2_ok(measured: float, paper: float | None) -> bool | None:
    """Within 3 percentage points; None where the paper prints no number."""
    return None if paper is None else abs(measured - paper) <= FIG2_POINTS


def fig13a_ok(measured: float, paper: float) -> bool:
    """Within 15 % of the paper's batch size."""
    return abs(measured - paper) <= FIG13A_RELATIVE * paper


def increasing(values: Mapping[int, float]) -> bool:
    """True when the values strictly grow with their keys (the ranking the paper's bars show)."""
    ordered = [values[key] for key in sorted(values)]
    return all(a < b for a, b in pairwise(ordered))


def fig15_ranking_ok(parallel: Mapping[int, float], beam: Mapping[int, float]) -> bool:
    """Savings grow with n and with width, and beam search beats parallel sampling at every width."""
    common = parallel.keys() & beam.keys()
    return increasing(parallel) and increasing(beam) and all(beam[w] > parallel[w] for w in common)


def fig18b_ranking_ok(waste: Mapping[int, float], from_size: int = 16) -> bool:
    """From `from_size` tokens up, every larger block wastes more (the paper's warning against big blocks)."""
    return increasing({size: value for size, value in waste.items() if size >= from_size})
