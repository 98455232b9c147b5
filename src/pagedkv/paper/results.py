"""What each experiment measured, and the JSON a script compares against the paper.

Invariant: `to_json` emits every number the table prints, under the issue's keys
(``fig2.<system>.<category>``, ``fig13a.<system>``, ``fig15.parallel.<n>``, ``fig15.beam.<width>``,
``fig18b.<block_size>``), each as ``{"pagedkv": measured, "paper": printed-or-null}``, so nothing is
shown that a script cannot check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pagedkv.paper import reference


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Average shares of total KV capacity over the measured window, in percent (they sum to 100)."""

    token_states: float
    reservation: float
    internal: float
    external: float
    mean_batch: float  # running requests per iteration
    mean_queue: float  # requests waiting per iteration
    mean_iteration_ms: float  # simulated seconds per iteration, from the time model
    iterations: int  # iterations averaged over
    preemptions: int
    finished: int

    def category(self, name: str) -> float:
        return float(getattr(self, name))


@dataclass(frozen=True, slots=True)
class SharingResult:
    """Fig. 15: blocks saved by sharing, ``1 - physical / logical`` over the window, in percent."""

    saving: float
    mean_batch: float  # running sequences (not requests) per iteration
    iterations: int
    preemptions: int


@dataclass(frozen=True, slots=True)
class BlockSizeResult:
    """Fig. 18b: vLLM's waste at one block size, in percent of KV capacity."""

    waste: float  # slots held by blocks but holding no token (the last block's padding)
    held: float  # slots held by blocks
    mean_batch: float
    finished: int
    iterations: int


@dataclass
class PaperResults:
    """Everything one `pagedkv paper` run measured, plus what it ran on."""

    setting: dict[str, object]
    fig2: dict[str, Breakdown] = field(default_factory=dict)
    fig13a: dict[str, Breakdown] = field(default_factory=dict)
    fig15: dict[str, dict[int, SharingResult]] = field(default_factory=dict)
    fig18b: dict[int, BlockSizeResult] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"setting": self.setting}
        if self.fig2:
            data["fig2"] = {
                system: {
                    category: _pair(result.category(category), reference.FIG2[system][category])
                    for category in reference.CATEGORIES
                }
                for system, result in self.fig2.items()
            }
        if self.fig13a:
            data["fig13a"] = {
                system: _pair(result.mean_batch, reference.FIG13A[system])
                for system, result in self.fig13a.items()
            }
        if self.fig15:
            data["fig15"] = {mode: _fig15_mode(mode, by_width) for mode, by_width in self.fig15.items()}
        if self.fig18b:
            data["fig18b"] = {
                str(size): {**_pair(result.waste, None), "mean_batch": round(result.mean_batch, 2)}
                for size, result in self.fig18b.items()
            }
        data["notes"] = self.notes
        data["wall_seconds"] = round(self.wall_seconds, 2)
        return data


def sharegpt_paper_value(mode: str, width: int) -> float | None:
    """The §6.3 ShareGPT range's ends, read as widths 2 and 6 (savings grow with width); None for 4."""
    low, high = reference.FIG15_SHAREGPT_RANGE[mode]
    return {min(reference.SAMPLE_WIDTHS): low, max(reference.SAMPLE_WIDTHS): high}.get(width)


def _fig15_mode(mode: str, by_width: dict[int, SharingResult]) -> dict[str, object]:
    return {
        str(width): {
            **_pair(result.saving, sharegpt_paper_value(mode, width)),
            "paper_alpaca": reference.FIG15_ALPACA[mode][width],
        }
        for width, result in by_width.items()
    }


def _pair(measured: float, paper: float | None) -> dict[str, float | None]:
    return {"pagedkv": round(measured, 2), "paper": paper}
