"""What the paper's memory figures ran on (model, GPU, KV budget, step time) and the knobs of a reproduction.

Invariant: the model and the GPU are the simulator's catalogue entries (OPT-13B, A100-40GB: every
number from their public config and datasheet), the step time is the simulator's `RooflineStepTime`
of that deployment, and a `PaperConfig` is validated on creation (`OptionError` naming the option),
so every experiment can trust it. The defaults are the paper's settings, or, where the paper is
silent, its artifact's (github.com/sosp-ae-39/sosp-ae-astra):

* the KV budget is the paper's measured 12 GiB (Fig. 1: just over 30 % of the 40 GB after 26 GB of
  weights), given as vLLM's ``kv_cache_memory_bytes``, not profiled: it is what the 2023 engine had,
  and its 983 blocks reproduce Orca (Max)'s 8.9 % external fragmentation exactly (87 blocks that no
  128-block slot fits in); today's vLLM accounting (`Deployment.memory_terms`) gives 11.56 GiB, 946
  blocks, for the same model and GPU;
* the artifact's scheduler and its limits: in each step one token per running sequence, then waiting
  prompts, whole and first come first served, while the step's tokens stay within
  ``max_num_batched_tokens`` = 2,560 and at most ``max_num_seqs`` = 256 sequences run (the simulator's
  V1 order without chunked prefill);
* Fig. 2: ShareGPT at 4 req/s for 900 s, averaged over steps in 300-900 s (``fig2.sh``);
* Fig. 13a: ShareGPT at 2 req/s (the paper's caption), same duration and window as Fig. 2;
* Fig. 15: vLLM with every request sampling n sequences, or beam width n; the paper ran Alpaca at
  20 req/s and gives no ShareGPT rate, so the rate defaults to Fig. 13a's (2 req/s);
* Fig. 18b: vLLM at each block size under the Fig. 2 load;
* Fig. 12: each system's mean normalized latency against the request rate, and the highest rate at
  which it stays within 1 s/token (the y-axis limit of the artifact's ``plot_fig12.py``, which sizes
  each panel to the rates under 1.1 s/token), on 600-s ShareGPT streams measured after a 60-s warm-up
  (the artifact's ``fig12-*.sh`` and ``plot_fig12.py``; the paper ran 3,600 s), every request served to
  its end, for the three panels of the paper's first row: OPT-13B on one A100-40GB, OPT-66B on four,
  OPT-175B on eight A100-80GB, each with its KV memory from the paper's Table 1 (12, 21, 264 GB,
  read as GiB as for OPT-13B) and the same time model and scheduler as every other figure;
* every figure is the mean over ten independent request streams (seeds 0-9) with the spread over
  them reported; the paper ran each configuration once, and three seeds were not enough for the
  goals to hold for every choice of seeds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from pagedkv.paper.reference import BLOCK_SIZES, SAMPLE_WIDTHS
from pagedkv.paper.sharegpt import MAX_TOTAL_LEN
from pagedkv.simulator.config import SimConfig
from pagedkv.simulator.deployment import Deployment
from pagedkv.simulator.gpu import GIB, GpuSpec
from pagedkv.simulator.model_config import ModelConfig
from pagedkv.simulator.option_error import OptionError
from pagedkv.simulator.roofline import RooflineStepTime

FIGURES = ("fig2", "fig12", "fig13a", "fig15", "fig18b")
MODEL = "OPT-13B"
GPU = "A100-40GB"
KV_CACHE_BYTES = 12 * GIB
MAX_NUM_BATCHED_TOKENS = 2560
MAX_NUM_SEQS = 256
DEFAULT_SEEDS = tuple(range(10))


def paper_deployment(
    block_size: int = 16,
    max_num_batched_tokens: int = MAX_NUM_BATCHED_TOKENS,
    max_num_seqs: int = MAX_NUM_SEQS,
) -> Deployment:
    """OPT-13B in fp16 on one A100-40GB with the paper's 12 GiB of KV cut into `block_size` blocks, and
    the artifact's scheduler limits."""
    return Deployment(
        ModelConfig.from_pretrained(MODEL),
        GpuSpec.from_name(GPU),
        block_size=block_size,
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
        kv_cache_memory_bytes=KV_CACHE_BYTES,
    )


@dataclass(frozen=True, slots=True)
class Panel:
    """One panel of the paper's Fig. 12 (its Table 1): a model on `tensor_parallel_size` GPUs of `gpu`
    with `kv_cache_gib` of KV memory in all (the paper's measurement, split evenly across the GPUs)."""

    model: str
    gpu: str
    tensor_parallel_size: int
    kv_cache_gib: float


FIG12_PANELS = {
    "OPT-13B": Panel("OPT-13B", "A100-40GB", 1, 12.0),
    "OPT-66B": Panel("OPT-66B", "A100-40GB", 4, 21.0),
    "OPT-175B": Panel("OPT-175B", "A100-80GB", 8, 264.0),
}


def panel_deployment(panel: Panel, max_num_batched_tokens: int, max_num_seqs: int) -> Deployment:
    """The panel's model on its GPUs with its share of the paper's KV memory on each, blocks of 16."""
    return Deployment(
        ModelConfig.from_pretrained(panel.model),
        GpuSpec.from_name(panel.gpu),
        tensor_parallel_size=panel.tensor_parallel_size,
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
        kv_cache_memory_bytes=int(panel.kv_cache_gib * GIB) // panel.tensor_parallel_size,
    )


def paper_time_model() -> RooflineStepTime:
    """The simulator's roofline for the paper's deployment, at its default efficiencies."""
    return paper_deployment().step_time_model()


@dataclass(frozen=True, slots=True)
class PaperSetting:
    """The deployment and vLLM's admission watermark: everything that fixes the KV pool.

    `watermark` is the fraction of vLLM's blocks that admission leaves free so running sequences can
    grow without preemption (1 % in the artifact's block manager). The paper's engine (vLLM 0.1) had no
    null block, so all `num_blocks` hold tokens.
    """

    deployment: Deployment = field(default_factory=paper_deployment)
    watermark: float = 0.01

    def __post_init__(self) -> None:
        d = self.deployment
        if d.batched_tokens < MAX_TOTAL_LEN - 1:
            raise OptionError(
                "max_num_batched_tokens",
                d.batched_tokens,
                f"must be >= {MAX_TOTAL_LEN - 1:,}: without chunked prefill the longest sequence the trace "
                "keeps must fit in one step when it is recomputed",
            )
        if d.num_seqs > d.batched_tokens:
            raise OptionError(
                "max_num_seqs",
                d.num_seqs,
                f"must be <= max_num_batched_tokens {d.batched_tokens:,}: every running sequence decodes a "
                "token each step",
            )

    @property
    def block_size(self) -> int:
        return self.deployment.block_size

    @property
    def num_blocks(self) -> int:
        """Blocks of the KV budget: 983 of 16 tokens for the paper's 12 GiB at 800 KiB a token."""
        return self.deployment.num_gpu_blocks

    @property
    def num_slots(self) -> int:
        """Token slots of KV capacity: the 100 % that every breakdown is a share of."""
        return self.num_blocks * self.block_size

    @property
    def max_seq_len(self) -> int:
        return self.deployment.model.max_model_len

    def with_block_size(self, block_size: int) -> PaperSetting:
        """The same memory cut into blocks of another size (Fig. 18b)."""
        return PaperSetting(dataclasses.replace(self.deployment, block_size=block_size), self.watermark)

    def describe(self) -> str:
        d = self.deployment
        gpus = "one" if d.tensor_parallel_size == 1 else f"{d.tensor_parallel_size} x"
        per_gpu = "" if d.tensor_parallel_size == 1 else " per GPU"
        return (
            f"{d.model.name} ({d.model.dtype}) on {gpus} {d.gpu.name}: {d.kv_bytes_per_token // 1024} KiB of "
            f"KV a token{per_gpu}, {d.budget.kv_cache_bytes / GIB:g} GiB of KV{per_gpu} (the paper's) = "
            f"{self.num_slots:,} token "
            f"slots ({self.num_blocks} blocks of {self.block_size}); max sequence {self.max_seq_len} tokens; "
            f"steps of at most {d.batched_tokens:,} tokens and {d.num_seqs} sequences, whole prompts"
        )


@dataclass(frozen=True, slots=True)
class PaperConfig:
    """One reproduction run; the defaults are the full run (tests shrink `duration`, `window`, `seeds`).

    `beam_prune_prob` is the simulator's beam model (`pagedkv.simulator.config.SimConfig`): each decode
    step every beam is, with this probability, replaced by a fork of another beam.
    """

    setting: PaperSetting = field(default_factory=PaperSetting)
    time_model: RooflineStepTime = field(default_factory=paper_time_model)
    figures: tuple[str, ...] = FIGURES
    duration: float = 900.0
    window: tuple[float, float] = (300.0, 900.0)
    fig2_rate: float = 4.0
    fig13a_rate: float = 2.0
    fig15_rate: float = 2.0
    fig15_widths: tuple[int, ...] = SAMPLE_WIDTHS
    fig18b_block_sizes: tuple[int, ...] = BLOCK_SIZES
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    beam_prune_prob: float = SimConfig().beam_prune_prob
    fig12_panels: tuple[str, ...] = tuple(FIG12_PANELS)
    fig12_duration: float = 600.0
    fig12_warmup: float = 60.0
    fig12_threshold: float = 1.0
    fig12_sensitivity: tuple[float, ...] = (0.5, 2.0)  # further thresholds, as factors of the threshold
    fig12_tolerance: float = 0.02
    fig12_start_rate: float = 1.0

    def __post_init__(self) -> None:
        unknown = [name for name in self.figures if name not in FIGURES]
        if unknown or not self.figures:
            raise OptionError("figures", ",".join(self.figures), f"choose among {', '.join(FIGURES)}")
        if not (self.duration > 0 and math.isfinite(self.duration)):
            raise OptionError("duration", self.duration, "must be a finite number of seconds > 0")
        start, end = self.window
        if not 0 <= start < end <= self.duration:
            raise OptionError(
                "window", self.window, f"must satisfy 0 <= START < END <= duration {self.duration:g}"
            )
        for name in ("fig2_rate", "fig13a_rate", "fig15_rate"):
            rate = getattr(self, name)
            if not (rate > 0 and math.isfinite(rate)):
                raise OptionError(name, rate, "must be a finite number of requests/s > 0")
        if any(width < 2 for width in self.fig15_widths):
            raise OptionError("fig15_widths", self.fig15_widths, "must all be >= 2: sharing needs n >= 2")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise OptionError("seeds", ",".join(map(str, self.seeds)), "must be distinct, at least one")
        if any(size < 1 for size in self.fig18b_block_sizes):
            raise OptionError("fig18b_block_sizes", self.fig18b_block_sizes, "must all be >= 1")
        if not 0.0 <= self.beam_prune_prob <= 1.0:
            raise OptionError("beam_prune_prob", self.beam_prune_prob, "must be a probability in [0, 1]")
        self._check_fig12()

    def _check_fig12(self) -> None:
        unknown = [name for name in self.fig12_panels if name not in FIG12_PANELS]
        if unknown or not self.fig12_panels or len(set(self.fig12_panels)) != len(self.fig12_panels):
            raise OptionError(
                "fig12_panels",
                ",".join(self.fig12_panels),
                f"choose distinct panels among {', '.join(FIG12_PANELS)}",
            )
        if not self.fig12_warmup >= 0:
            raise OptionError("fig12_warmup", self.fig12_warmup, "must be >= 0 seconds")
        if not (math.isfinite(self.fig12_duration) and self.fig12_warmup < self.fig12_duration):
            raise OptionError(
                "fig12_duration",
                self.fig12_duration,
                f"must be longer than the {self.fig12_warmup:g}-s warm-up",
            )
        if not (math.isfinite(self.fig12_threshold) and self.fig12_threshold > 0):
            raise OptionError(
                "fig12_threshold", self.fig12_threshold, "must be a finite number of s/token > 0"
            )
        if not all(math.isfinite(f) and f > 0 for f in self.fig12_sensitivity):
            raise OptionError("fig12_sensitivity", self.fig12_sensitivity, "must be finite factors > 0")
        if not 0 < self.fig12_tolerance < 1:
            raise OptionError("fig12_tolerance", self.fig12_tolerance, "must be in (0, 1)")
        if not (math.isfinite(self.fig12_start_rate) and self.fig12_start_rate > 0):
            raise OptionError(
                "fig12_start_rate", self.fig12_start_rate, "must be a finite number of requests/s > 0"
            )

    @property
    def fig12_thresholds(self) -> tuple[float, ...]:
        """The threshold, then the sensitivity thresholds (its multiples), each once."""
        multiples = (self.fig12_threshold * factor for factor in self.fig12_sensitivity)
        return tuple(dict.fromkeys((self.fig12_threshold, *multiples)))

    def fig12_setting(self, panel: str) -> PaperSetting:
        """The panel's deployment with this run's scheduler limits and watermark."""
        d = self.setting.deployment
        deployment = panel_deployment(FIG12_PANELS[panel], d.batched_tokens, d.num_seqs)
        return PaperSetting(deployment, self.setting.watermark)

    def fig12_time_model(self, panel: str) -> RooflineStepTime:
        """The panel's roofline at this run's efficiencies and host time (the other figures' time model)."""
        tm = self.time_model
        return self.fig12_setting(panel).deployment.step_time_model(
            hbm_efficiency=tm.hbm_efficiency,
            compute_efficiency=tm.compute_efficiency,
            host_overhead_s=tm.host_overhead_s,
        )
