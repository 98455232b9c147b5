"""Seconds per engine iteration: the bridge between steps (what the simulator counts) and arrivals (seconds).

Invariant: the model is piecewise linear in the work of one iteration and every coefficient comes from a
stated hardware or model figure times a stated efficiency, so the report can print the formula with its
numbers and a reader can change any of them (`pagedkv paper --hbm-efficiency ...`).

One iteration of an OPT-style decoder on one GPU costs:

* the linear layers: every weight is read once (25.7 GB for OPT-13B) and every *new* token (each decoding
  sequence's one token plus every prompt token prefilled this iteration) is multiplied through them at
  2 FLOPs a parameter; whichever takes longer bounds them (a roofline: a decode batch of tens of tokens is
  memory bound, a 2,000-token prefill is compute bound);
* attention: every running sequence reads the K/V of its whole context (800 KiB a token), memory bound;
* the host: `host_overhead_s` of scheduling, input preparation and reading back the sampled tokens, during
  which the GPU idles (the 2023 engine ran a Python scheduler and a Ray call per iteration).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pagedkv.errors import InvalidArgument
from pagedkv.paper.setting import GpuSpec, ModelSpec

DEFAULT_HBM_EFFICIENCY = 0.8
DEFAULT_COMPUTE_EFFICIENCY = 0.5
DEFAULT_HOST_OVERHEAD_S = 0.010


@dataclass(frozen=True, slots=True)
class RooflineIterationTime:
    """``seconds = host + max(weights / BW', flops * new / peak') + kv_bytes * context / BW'``.

    ``BW' = BW * hbm_efficiency`` and ``peak' = peak * compute_efficiency``.

    Defaults and where they come from (see docs/paper.md for the sensitivity of every figure to them):

    * ``hbm_efficiency = 0.8``: streaming reads reach ~80 % of the A100's 1,555 GB/s; the paper's own
      PagedAttention kernel is 20-26 % slower than FasterTransformer's (its Fig. 18a).
    * ``compute_efficiency = 0.5``: Anyscale's 2023 continuous-batching benchmark measured vLLM 0.1 on
      OPT-13B / A100-40GB at ~6,100 tokens/s on 512-token prompts with short outputs, ~0.16 ms a token;
      the fp16 peak would take 0.082 ms, so prompt GEMMs ran at about half of peak.
    * ``host_overhead_s = 0.010``: per-iteration CPU time the GPU waits for. The vLLM team profiled its own
      engine (blog, Sep. 2024) at 29 % of execution time in scheduling and input preparation for an 8B
      model on an H100; ~10 ms an iteration is that share of a ~35 ms OPT-13B step.
    """

    model: ModelSpec = field(default_factory=ModelSpec)
    gpu: GpuSpec = field(default_factory=GpuSpec)
    hbm_efficiency: float = DEFAULT_HBM_EFFICIENCY
    compute_efficiency: float = DEFAULT_COMPUTE_EFFICIENCY
    host_overhead_s: float = DEFAULT_HOST_OVERHEAD_S

    def __post_init__(self) -> None:
        for name in ("hbm_efficiency", "compute_efficiency"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise InvalidArgument(f"{name}={value!r} must be a fraction of peak in (0, 1]")
        if not self.host_overhead_s >= 0.0:
            raise InvalidArgument(f"host_overhead_s={self.host_overhead_s!r} must be >= 0 seconds")

    @property
    def weights_s(self) -> float:
        """Seconds to read every weight once: the floor of the linear layers' time."""
        return self.model.weight_bytes / self._bandwidth

    @property
    def per_context_token_s(self) -> float:
        """Seconds to read one token's K and V (every running sequence reads its whole context)."""
        return self.model.kv_bytes_per_token / self._bandwidth

    @property
    def per_new_token_s(self) -> float:
        """Seconds of matrix multiplies for one new token (a prompt token or a decoded one)."""
        return self.model.flops_per_token / (self.gpu.peak_flops * self.compute_efficiency)

    def __call__(self, batch: int, prefill_tokens: int, context_tokens: int) -> float:
        """The simulator's iteration-time hook: `batch` sequences each decode one token, `prefill_tokens`
        prompt (or recomputed) tokens are computed, attention reads `context_tokens` tokens of K/V."""
        return self.seconds(context_tokens, batch + prefill_tokens)

    def seconds(self, context_tokens: int, new_tokens: int) -> float:
        """Duration of an iteration that attends over `context_tokens` and computes `new_tokens`."""
        linear = max(self.weights_s, self.per_new_token_s * new_tokens)
        return self.host_overhead_s + linear + self.per_context_token_s * context_tokens

    @property
    def _bandwidth(self) -> float:
        return self.gpu.hbm_bytes_per_s * self.hbm_efficiency

    def describe(self) -> str:
        """The formula with its numbers, for the report header."""
        return (
            f"iteration = host {self.host_overhead_s * 1e3:.1f} ms"
            f" + max(weights {self.weights_s * 1e3:.1f} ms, {self.per_new_token_s * 1e6:.1f} us x new tokens)"
            f" + {self.per_context_token_s * 1e6:.3f} us x context tokens"
            f"  [{self.model.name} on {self.gpu.name}: {self.hbm_efficiency:.0%} of "
            f"{self.gpu.hbm_bytes_per_s / 1e9:,.0f} GB/s, {self.compute_efficiency:.0%} of "
            f"{self.gpu.peak_flops / 1e12:.0f} TFLOP/s fp16]"
        )
