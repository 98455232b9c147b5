"""Seconds per engine step from a model, a GPU and a tensor-parallel degree: a roofline with stated sources.

Invariant: every coefficient is a model number (from its config) or a GPU number (from its datasheet)
times a stated efficiency, each listed with where it comes from by `coefficients()`, so a user can see
why a step takes what it takes and change any input. The model is the simulator's time-model protocol,
a callable ``(batch, prefill_tokens, context_tokens) -> seconds`` (see `pagedkv.simulator.config`).

One step on each of the ``N = tensor_parallel_size`` GPUs, which run in lockstep:

* linear layers: the GPU's share of the weights is read once, and every new token is multiplied
  through them at 2 FLOPs a weight; whichever takes longer bounds them (a roofline: a decode batch of
  tens of tokens is memory bound, a long prefill compute bound). A decoded token also goes through
  the LM head; a prompt token does not (vLLM computes logits for the last prompt position only).
* attention: each context token's K and V on this GPU is read once, memory bound.
* tensor parallelism: two all-reduces of the step's hidden states per layer (after attention and
  after the MLP, vLLM's row-parallel layers), each a fixed latency plus a ring's ``2 (N-1)/N`` of the
  bytes over the GPU's link; none when ``N = 1``.
* the host: a fixed time per step (scheduling, input preparation, sampling) the GPU waits for.

Not modelled (see docs/serving.md): attention FLOPs over long prompts (quadratic in the prompt, they
dominate prefill beyond ~8K tokens), kernel launch gaps, overlap of communication with compute, and
the efficiency's dependence on batch shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pagedkv.simulator.gpu import GpuSpec
from pagedkv.simulator.model_config import ModelConfig
from pagedkv.simulator.option_error import OptionError

ACTIVATION_BYTES = 2  # hidden states travel in 16 bits

DEFAULT_HBM_EFFICIENCY = 0.8
DEFAULT_COMPUTE_EFFICIENCY = 0.5
DEFAULT_HOST_OVERHEAD_S = 0.010
DEFAULT_LINK_EFFICIENCY = 0.8
DEFAULT_ALLREDUCE_LATENCY_S = 12.5e-6

SOURCES = {
    "hbm_efficiency": (
        "streaming reads reach ~80 % of HBM peak; the PagedAttention paper's kernel is 20-26 % slower "
        "than FasterTransformer's (its Fig. 18a)"
    ),
    "compute_efficiency": (
        "Anyscale's 2023 continuous-batching benchmark: vLLM 0.1, OPT-13B on one A100-40GB, ~6,100 "
        "tokens/s on 512-token prompts = ~0.16 ms a token where the fp16 peak takes 0.082 ms"
    ),
    "host_overhead_s": (
        "vLLM blog (Sep. 2024): scheduling and input preparation took 29 % of an 8B model's execution "
        "time on an H100; ~10 ms of a ~35 ms OPT-13B step"
    ),
    "link_efficiency": (
        "NCCL's protocol overhead (~20 %): 370 of the 450 GB/s NVLink 4 line rate "
        "(NCCL developer, github.com/NVIDIA/nccl-tests/issues/212)"
    ),
    "allreduce_latency_s": (
        "NCCL all_reduce_perf of 4-16 B on 8 NVLink-connected Hopper GPUs: 12.5 us "
        "(github.com/deepseek-ai/DeepEP/issues/303)"
    ),
}


@dataclass(frozen=True, slots=True)
class Coefficient:
    """One number of the step-time formula: what it is, its value, its unit, where it comes from."""

    name: str
    value: float
    unit: str
    source: str

    def format(self) -> str:
        return f"{self.name:<28}{_scaled(self.value, self.unit):>14}   {self.source}"


@dataclass(frozen=True, slots=True)
class RooflineStepTime:
    """``seconds = host + max(W / BW', F_p p + F_d b) + K c / BW' + allreduce(b + p)`` per step.

    ``b`` = sequences decoding a token, ``p`` = prompt tokens computed (chunks included), ``c`` =
    context tokens attention reads; ``W`` weight bytes, ``F`` FLOPs per prompt / decoded token over
    ``peak'``, ``K`` KV bytes per token, all per GPU; ``BW' = BW x hbm_efficiency``, ``peak' = peak x
    compute_efficiency``. See the module docstring and `coefficients()` for every number's source.
    """

    model: ModelConfig
    gpu: GpuSpec
    tensor_parallel_size: int = 1
    kv_cache_dtype: str = "auto"
    hbm_efficiency: float = DEFAULT_HBM_EFFICIENCY
    compute_efficiency: float = DEFAULT_COMPUTE_EFFICIENCY
    host_overhead_s: float = DEFAULT_HOST_OVERHEAD_S
    link_efficiency: float = DEFAULT_LINK_EFFICIENCY
    allreduce_latency_s: float = DEFAULT_ALLREDUCE_LATENCY_S
    weights_s: float = field(init=False)
    prefill_token_s: float = field(init=False)
    decode_token_s: float = field(init=False)
    context_token_s: float = field(init=False)
    allreduce_step_s: float = field(init=False)
    allreduce_token_s: float = field(init=False)

    def __post_init__(self) -> None:
        for name in ("hbm_efficiency", "compute_efficiency", "link_efficiency"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise OptionError(name, value, "must be a fraction of peak in (0, 1]")
        for name in ("host_overhead_s", "allreduce_latency_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise OptionError(name, value, "must be a finite number of seconds >= 0")
        tp = self.tensor_parallel_size
        if tp < 1:
            raise OptionError("tensor_parallel_size", tp, "must be >= 1")
        if tp > 1 and self.gpu.link_gb_per_s <= 0:
            raise OptionError(
                "tensor_parallel_size", tp, f"needs a link between GPUs; GPU {self.gpu.name!r} has none"
            )
        bandwidth = self.gpu.hbm_bytes_per_s * self.hbm_efficiency
        flops = self.gpu.peak_flops * self.compute_efficiency
        m = self.model
        _set(self, "weights_s", m.weight_bytes_per_gpu(tp) / bandwidth)
        _set(self, "prefill_token_s", m.flops_per_token(tp, lm_head=False) / flops)
        _set(self, "decode_token_s", m.flops_per_token(tp, lm_head=True) / flops)
        _set(self, "context_token_s", m.kv_bytes_per_token(self.kv_cache_dtype, tp) / bandwidth)
        allreduces = 2 * m.num_layers if tp > 1 else 0
        ring = 2 * (tp - 1) / tp * m.hidden_size * ACTIVATION_BYTES
        link = self.gpu.link_bytes_per_s * self.link_efficiency
        _set(self, "allreduce_step_s", allreduces * self.allreduce_latency_s)
        _set(self, "allreduce_token_s", allreduces * ring / link if allreduces else 0.0)

    def __call__(self, batch: int, prefill_tokens: int, context_tokens: int) -> float:
        """The simulator's step-time hook (see the class docstring for the formula)."""
        compute = self.prefill_token_s * prefill_tokens + self.decode_token_s * batch
        new_tokens = batch + prefill_tokens
        allreduce = self.allreduce_step_s + self.allreduce_token_s * new_tokens if new_tokens else 0.0
        return (
            self.host_overhead_s
            + max(self.weights_s, compute)
            + self.context_token_s * context_tokens
            + allreduce
        )

    def coefficients(self) -> tuple[Coefficient, ...]:
        """Every number of the formula with its unit and source, in the order `describe` prints them."""
        m, g, tp = self.model, self.gpu, self.tensor_parallel_size
        per_gpu = f" / GPU (TP {tp})" if tp > 1 else ""
        rows = [
            Coefficient("host", self.host_overhead_s, "s", SOURCES["host_overhead_s"]),
            Coefficient(
                "read weights",
                self.weights_s,
                "s",
                f"{m.weight_bytes_per_gpu(tp) / 2**30:.2f} GiB{per_gpu} ({m.name}, embeddings and LM head "
                f"included) at {self.hbm_efficiency:.0%} of {g.hbm_gb_per_s:,g} GB/s ({g.name} datasheet)",
            ),
            Coefficient(
                "per prompt token",
                self.prefill_token_s,
                "s",
                f"{m.flops_per_token(tp, lm_head=False) / 1e9:.2f} GFLOP{per_gpu} "
                f"at {self.compute_efficiency:.0%} "
                f"of {g.bf16_tflops:,g} TFLOP/s bf16 dense ({g.name} datasheet)",
            ),
            Coefficient(
                "per decoded token",
                self.decode_token_s,
                "s",
                f"{m.flops_per_token(tp, lm_head=True) / 1e9:.2f} GFLOP{per_gpu}, LM head included",
            ),
            Coefficient(
                "per context token",
                self.context_token_s,
                "s",
                f"{m.kv_bytes_per_token(self.kv_cache_dtype, tp) / 1024:,.0f} KiB of K/V{per_gpu} "
                f"(kv_cache_dtype {self.kv_cache_dtype}) at {self.hbm_efficiency:.0%} of HBM",
            ),
            Coefficient("hbm_efficiency", self.hbm_efficiency, "", SOURCES["hbm_efficiency"]),
            Coefficient("compute_efficiency", self.compute_efficiency, "", SOURCES["compute_efficiency"]),
        ]
        if tp > 1:
            rows += [
                Coefficient(
                    "all-reduces per step",
                    self.allreduce_step_s,
                    "s",
                    f"2 x {m.num_layers} layers x {self.allreduce_latency_s * 1e6:g} us; "
                    + SOURCES["allreduce_latency_s"],
                ),
                Coefficient(
                    "all-reduce per token",
                    self.allreduce_token_s,
                    "s",
                    f"2 x {m.num_layers} x 2({tp}-1)/{tp} x {m.hidden_size} x {ACTIVATION_BYTES} B over "
                    f"{self.link_efficiency:.0%} of {g.link_gb_per_s:,g} GB/s each way ({g.link or 'link'}); "
                    + SOURCES["link_efficiency"],
                ),
            ]
        return tuple(rows)

    def describe(self) -> str:
        """The formula with its numbers, then one line per coefficient with its source."""
        head = (
            f"step = host {self.host_overhead_s * 1e3:.1f} ms"
            f" + max(weights {self.weights_s * 1e3:.2f} ms,"
            f" {self.prefill_token_s * 1e6:.2f} us x prompt tokens"
            f" + {self.decode_token_s * 1e6:.2f} us x decoded tokens)"
            f" + {self.context_token_s * 1e9:,.1f} ns x context tokens"
        )
        if self.tensor_parallel_size > 1:
            head += (
                f" + all-reduce {self.allreduce_step_s * 1e3:.2f} ms"
                f" + {self.allreduce_token_s * 1e6:.2f} us x new tokens"
            )
        return "\n".join([head, *(f"  {row.format()}" for row in self.coefficients())])


def _set(obj: RooflineStepTime, name: str, value: float) -> None:
    object.__setattr__(obj, name, value)


def _scaled(value: float, unit: str) -> str:
    if unit != "s":
        return f"{value:g}"
    for scale, suffix in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
        if value >= scale or scale == 1e-9:
            return f"{value / scale:,.3f} {suffix}"
    return f"{value:g} s"
