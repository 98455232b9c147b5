"""What each figure measured over the seeds (mean and spread), and the JSON a script compares with the paper.

Invariant: a figure's number is the mean of one `Measurement` per seed, and its spread (min, max,
standard deviation over the seeds) travels with it, so nothing is reported without the variation
behind it; `to_json` emits every number the table prints, under the keys ``fig2.<system>.<category>``,
``fig13a.<system>``, ``fig15.parallel.<n>``, ``fig15.beam.<width>``, ``fig18b.<block_size>`` (systems and
categories named as the simulator names them), each as ``{"pagedkv": mean, "paper": printed-or-null,
"spread": {...}}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import fmean, stdev
from typing import Any

from pagedkv.paper import reference
from pagedkv.paper.tasks import Measurement


@dataclass(frozen=True, slots=True)
class Spread:
    """A number measured once per seed: the mean (what goals are checked on) and how far seeds spread."""

    mean: float
    low: float
    high: float
    std: float  # sample standard deviation over the seeds (0 for one seed)

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(fmean(values), min(values), max(values), stdev(values) if len(values) > 1 else 0.0)

    def to_json(self) -> dict[str, float]:
        return {"min": round(self.low, 2), "max": round(self.high, 2), "std": round(self.std, 2)}


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Fig. 2 / 13a, one system: shares of KV capacity (percent), batch, and the run's other means."""

    shares: dict[str, Spread]
    mean_batch: Spread
    mean_queue: float
    mean_step_ms: float
    steps: int  # steps averaged over, all seeds together
    preemptions: float  # per seed
    finished: float  # per seed

    @classmethod
    def of(cls, runs: Sequence[Measurement]) -> Breakdown:
        return cls(
            shares={c: Spread.of([r.shares[c] for r in runs]) for c in reference.CATEGORIES},
            mean_batch=Spread.of([r.mean_batch for r in runs]),
            mean_queue=fmean(r.mean_queue for r in runs),
            mean_step_ms=fmean(r.mean_step_ms for r in runs),
            steps=sum(r.steps for r in runs),
            preemptions=fmean(r.preemptions for r in runs),
            finished=fmean(r.finished for r in runs),
        )

    def category(self, name: str) -> float:
        return self.shares[name].mean


@dataclass(frozen=True, slots=True)
class SharingResult:
    """Fig. 15, one mode and width: KV blocks saved by sharing, percent of blocks without sharing."""

    saving: Spread
    mean_batch: float  # running sequences (not requests) per step
    steps: int
    preemptions: float

    @classmethod
    def of(cls, runs: Sequence[Measurement]) -> SharingResult:
        return cls(
            saving=Spread.of([r.saving for r in runs]),
            mean_batch=fmean(r.mean_batch for r in runs),
            steps=sum(r.steps for r in runs),
            preemptions=fmean(r.preemptions for r in runs),
        )


@dataclass(frozen=True, slots=True)
class BlockSizeResult:
    """Fig. 18b, one block size: vLLM's waste, percent of KV capacity."""

    waste: Spread  # slots held by blocks but holding no token (the last block's padding)
    held: float  # slots held by blocks
    mean_batch: float
    finished: float
    steps: int

    @classmethod
    def of(cls, runs: Sequence[Measurement]) -> BlockSizeResult:
        return cls(
            waste=Spread.of([r.waste for r in runs]),
            held=fmean(r.held for r in runs),
            mean_batch=fmean(r.mean_batch for r in runs),
            finished=fmean(r.finished for r in runs),
            steps=sum(r.steps for r in runs),
        )


@dataclass(frozen=True, slots=True)
class Fig12System:
    """Fig. 12, one system of one panel: the rate it sustains at the threshold and its latency curve."""

    rate: float | None  # the highest rate sustained, seeds pooled (None: none down to the search's floor)
    next_rate: float | None  # the lowest rate not sustained
    seed_rates: Spread | None  # each seed's own knee, interpolated between the rates tried
    batch_mean: float  # sequences decoding a step at `rate`, mean over the seeds
    curve: tuple[
        tuple[float, float, float, float], ...
    ]  # (rate, mean normalized latency, lowest, highest seed)


@dataclass(frozen=True, slots=True)
class Fig12Ratio:
    """vLLM's sustained rate over one Orca system's: the seeds pooled, and seed by seed (paired streams)."""

    pooled: float
    seeds: Spread | None


@dataclass(frozen=True, slots=True)
class Fig12Panel:
    """Fig. 12, one panel: every system, vLLM's ratios, and the rates at each threshold searched."""

    setting: str
    systems: dict[str, Fig12System]
    ratios: dict[str, Fig12Ratio]
    sensitivity: dict[float, dict[str, float | None]]  # threshold (s/token) -> system -> sustained rate

    def ratio_at(self, threshold: float, system: str) -> float | None:
        """vLLM's rate over `system`'s at `threshold` (None when either sustained no rate)."""
        rates = self.sensitivity[threshold]
        vllm, other = rates["paged"], rates[system]
        return vllm / other if vllm and other else None


@dataclass
class PaperResults:
    """Everything one `pagedkv paper` run measured, plus what it ran on."""

    setting: dict[str, object]
    fig2: dict[str, Breakdown] = field(default_factory=dict)
    fig13a: dict[str, Breakdown] = field(default_factory=dict)
    fig15: dict[str, dict[int, SharingResult]] = field(default_factory=dict)
    fig18b: dict[int, BlockSizeResult] = field(default_factory=dict)
    fig12: dict[str, Fig12Panel] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"setting": self.setting}
        if self.fig2:
            data["fig2"] = {
                system: {c: _entry(result.shares[c], reference.FIG2[system][c]) for c in reference.CATEGORIES}
                for system, result in self.fig2.items()
            }
        if self.fig13a:
            data["fig13a"] = {
                system: _entry(result.mean_batch, reference.FIG13A[system])
                for system, result in self.fig13a.items()
            }
        if self.fig15:
            data["fig15"] = {
                mode: {
                    str(width): {
                        **_entry(result.saving, reference.sharegpt_paper_value(mode, width)),
                        "paper_alpaca": reference.FIG15_ALPACA[mode][width],
                    }
                    for width, result in by_width.items()
                }
                for mode, by_width in self.fig15.items()
            }
        if self.fig18b:
            data["fig18b"] = {
                str(size): {**_entry(result.waste, None), "mean_batch": round(result.mean_batch, 2)}
                for size, result in self.fig18b.items()
            }
        if self.fig12:
            data["fig12"] = {panel: _fig12_json(result) for panel, result in self.fig12.items()}
        data["notes"] = self.notes
        data["wall_seconds"] = round(self.wall_seconds, 2)
        return data


def _entry(measured: Spread, paper: float | None) -> dict[str, Any]:
    return {"pagedkv": round(measured.mean, 2), "paper": paper, "spread": measured.to_json()}


def _fig12_json(panel: Fig12Panel) -> dict[str, Any]:
    systems = {
        system: {
            "rate": _rounded(result.rate),
            "next_rate": _rounded(result.next_rate),
            "seeds": result.seed_rates.to_json() if result.seed_rates else None,
            "batch_mean": _rounded(result.batch_mean, 2),
            "curve": [
                {
                    "rate": round(rate, 4),
                    "normalized_s": round(mean, 4),
                    "min": round(low, 4),
                    "max": round(high, 4),
                }
                for rate, mean, low, high in result.curve
            ],
        }
        for system, result in panel.systems.items()
    }
    ratios = {
        system: {
            "pagedkv": _rounded(ratio.pooled),
            "paper": list(reference.FIG12_RATIOS[system]) if system in reference.FIG12_RATIOS else None,
            "spread": ratio.seeds.to_json() if ratio.seeds else None,
            "goal": reference.fig12_ok(system, ratio.pooled),
        }
        for system, ratio in panel.ratios.items()
    }
    sensitivity = {
        f"{threshold:g}": {
            "rates": {system: _rounded(rate) for system, rate in rates.items()},
            "ratios": {system: _rounded(panel.ratio_at(threshold, system)) for system in reference.ORCA},
        }
        for threshold, rates in panel.sensitivity.items()
    }
    return {
        "setting": panel.setting,
        "systems": systems,
        "ratios": ratios,
        "sensitivity": {"threshold_s": sensitivity},
    }


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)
