"""Which experiments to run and under what load: the knobs of `pagedkv paper`, with the paper's values.

Invariant: the defaults are the paper's (or, where the paper is silent, its artifact's) settings, and a
`PaperConfig` is validated on construction, so every experiment can trust it.

* Fig. 2: ShareGPT at 4 req/s for 900 s, averaged over iterations in 300-900 s (artifact ``fig2.sh``).
* Fig. 13a: ShareGPT at 2 req/s (the paper's caption), same duration and window as Fig. 2.
* Fig. 15: vLLM with every request sampling n sequences, or beam width n; the paper ran Alpaca at
  20 req/s (``fig15.sh``) and does not say at what rate it measured ShareGPT, so the rate defaults to
  Fig. 13a's ShareGPT rate, 2 req/s (docs/paper.md shows how the savings move with it).
* Fig. 18b: vLLM at each block size under the Fig. 2 load.

Every figure is the mean over `seeds` independent request streams (three by default); the paper ran
each configuration once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pagedkv.errors import InvalidArgument
from pagedkv.paper.reference import BLOCK_SIZES, SAMPLE_WIDTHS
from pagedkv.paper.setting import PaperSetting
from pagedkv.paper.timing import RooflineIterationTime
from pagedkv.simulator.config import SimConfig

FIGURES = ("fig2", "fig13a", "fig15", "fig18b")


@dataclass(frozen=True)
class PaperConfig:
    """One reproduction run; the defaults are the full run (tests shrink `duration` and `window`).

    `beam_prune_prob` is the simulator's beam model (see `pagedkv.simulator.config.SimConfig`): each
    decode step every beam is, with this probability, replaced by a fork of another beam.
    """

    setting: PaperSetting = field(default_factory=PaperSetting)
    time_model: RooflineIterationTime = field(default_factory=RooflineIterationTime)
    figures: tuple[str, ...] = FIGURES
    duration: float = 900.0
    window: tuple[float, float] = (300.0, 900.0)
    fig2_rate: float = 4.0
    fig13a_rate: float = 2.0
    fig15_rate: float = 2.0
    fig15_widths: tuple[int, ...] = SAMPLE_WIDTHS
    fig18b_block_sizes: tuple[int, ...] = BLOCK_SIZES
    seeds: tuple[int, ...] = (0, 1, 2)
    beam_prune_prob: float = SimConfig().beam_prune_prob

    def __post_init__(self) -> None:
        unknown = [name for name in self.figures if name not in FIGURES]
        if unknown or not self.figures:
            raise InvalidArgument(f"figures={self.figures!r}: choose among {', '.join(FIGURES)}")
        if not (self.duration > 0 and math.isfinite(self.duration)):
            raise InvalidArgument(f"duration={self.duration!r} must be a finite number of seconds > 0")
        start, end = self.window
        if not 0 <= start < end <= self.duration:
            raise InvalidArgument(
                f"window={self.window!r} must satisfy 0 <= start < end <= duration={self.duration}"
            )
        for name in ("fig2_rate", "fig13a_rate", "fig15_rate"):
            rate = getattr(self, name)
            if not (rate > 0 and math.isfinite(rate)):
                raise InvalidArgument(f"{name}={rate!r} must be a finite number of requests/s > 0")
        if any(width < 2 for width in self.fig15_widths):
            raise InvalidArgument(f"fig15_widths={self.fig15_widths!r}: sharing needs n >= 2 sequences")
        if not self.seeds:
            raise InvalidArgument("seeds=() leaves nothing to run; give at least one seed")
        if any(size < 1 for size in self.fig18b_block_sizes):
            raise InvalidArgument(f"fig18b_block_sizes={self.fig18b_block_sizes!r} must all be >= 1")
