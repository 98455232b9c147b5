"""A model served on N GPUs with vLLM's memory options: how many KV blocks it gets, and its step time.

Invariant: the block count is computed the way vLLM computes it, term by term, and every term is kept
(`memory_terms()`) so a command can print the whole sum; a `Deployment` that exists has room for at
least one block (checked on creation), so the simulator can trust it.

vLLM V1 (vllm/v1/worker/gpu_worker.py ``determine_available_memory``, vllm/utils/mem_utils.py
``memory_profiling``), per GPU::

    requested  = total memory x gpu_memory_utilization
    KV cache   = requested - weights - peak activations - non-torch memory
    blocks     = KV cache // (block_size x KV bytes per token on this GPU)

* weights: the GPU's share of the parameters (`ModelConfig.weight_bytes_per_gpu`).
* peak activations: vLLM measures the PyTorch peak of one forward pass over ``max_num_batched_tokens``
  tokens followed by the sampler on ``min(max_num_seqs, max_num_batched_tokens)`` rows
  (``GPUModelRunner.profile_run``). pagedkv estimates it (`activation_estimate`) unless a measured
  value is given; measured values vary with the vLLM version and attention backend (1.26 GiB on an
  H100 but 9.37 GiB on an A100-40GB for Meta-Llama-3-8B at 8,192 tokens, vllm-project/vllm#10511 and
  #12330), so a measured number from the vLLM log is better when there is one.
* non-torch memory: what grows outside PyTorch's allocator while loading and profiling (cuBLAS
  workspaces, lazily loaded kernels); 0.16 GiB on an H100 in vLLM's own log (vllm-project/vllm#12126).
* not subtracted, as vLLM does not subtract them: CUDA graphs (captured after the KV cache is
  allocated, from the ``1 - gpu_memory_utilization`` headroom; subtracted only with
  ``VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS``), the CUDA context and NCCL's buffers (allocated before
  vLLM's baseline snapshot). With ``kv_cache_memory_bytes`` (vLLM's ``--kv-cache-memory``) profiling
  is skipped and that many bytes are the KV cache.

vLLM V1's block pool keeps block 0 as a placeholder (the "null block", vllm/v1/core/block_pool.py), so
`usable_blocks` is one less than `num_gpu_blocks`, the number vLLM logs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pagedkv.simulator.gpu import GIB, GpuSpec
from pagedkv.simulator.model_config import KV_CACHE_DTYPES, ModelConfig
from pagedkv.simulator.option_error import OptionError
from pagedkv.simulator.roofline import RooflineStepTime

DEFAULT_NON_TORCH_BYTES = int(0.16 * GIB)
SAMPLER_BYTES_PER_LOGIT = 8  # fp32 logits and the sampler's fp32 probabilities
NULL_BLOCKS = 1
LARGE_GPU_BYTES = 70 * GIB


@dataclass(frozen=True, slots=True)
class MemoryTerm:
    """One line of the KV memory sum: a signed amount per GPU and where it comes from."""

    label: str
    bytes: int
    source: str

    def format(self) -> str:
        sign = "-" if self.bytes < 0 else " "
        return f"{sign} {self.label:<34}{abs(self.bytes) / GIB:10.2f} GiB   {self.source}"


@dataclass(frozen=True, slots=True)
class MemoryBudget:
    """The sum that gives the KV cache of each GPU, and the blocks it is cut into."""

    terms: tuple[MemoryTerm, ...]
    kv_cache_bytes: int
    bytes_per_block: int
    num_gpu_blocks: int

    def format(self) -> str:
        """The terms, their total and the division into blocks, one line each (for a CLI)."""
        lines = [term.format() for term in self.terms]
        lines.append(f"= {'KV cache per GPU':<34}{self.kv_cache_bytes / GIB:10.2f} GiB")
        lines.append(
            f"/ {'bytes per block per GPU':<34}{self.bytes_per_block / 2**20:10.2f} MiB"
            f"   = {self.num_gpu_blocks:,} blocks ({self.num_gpu_blocks - NULL_BLOCKS:,} usable: "
            "vLLM keeps one as its null block)"
        )
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Deployment:
    """A model on ``tensor_parallel_size`` GPUs of one kind, with vLLM's options and defaults.

    ``max_num_batched_tokens`` / ``max_num_seqs`` default as ``vllm serve`` sets them
    (vllm/engine/arg_utils.py ``EngineArgs.get_batch_defaults``: 8,192 / 1,024 on GPUs of >= 70 GiB
    other than the A100, 2,048 / 256 elsewhere). ``activation_bytes`` replaces the activation estimate
    by a measured peak; ``kv_cache_memory_bytes`` fixes the KV cache size per GPU (profiling skipped).
    """

    model: ModelConfig
    gpu: GpuSpec
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    kv_cache_dtype: str = "auto"
    block_size: int = 16
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    kv_cache_memory_bytes: int | None = None
    activation_bytes: int | None = None
    non_torch_bytes: int = DEFAULT_NON_TORCH_BYTES
    budget: MemoryBudget = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_options()
        self._check_parallelism()
        object.__setattr__(self, "budget", self._budget())
        if self.budget.num_gpu_blocks <= NULL_BLOCKS:
            raise OptionError(
                "gpu_memory_utilization",
                self.gpu_memory_utilization,
                f"leaves {self.budget.kv_cache_bytes / GIB:.2f} GiB per GPU for the KV cache of "
                f"{self.model.name} on {self.tensor_parallel_size} x {self.gpu.name} "
                f"({self.budget.num_gpu_blocks} blocks of {self.block_size} tokens); raise it, "
                "raise --tensor-parallel-size, or use a larger GPU",
            )

    # -- what a command reads -------------------------------------------------------------------

    def memory_terms(self) -> MemoryBudget:
        """Every term of the KV memory sum per GPU, the KV bytes, the block size in bytes, the blocks."""
        return self.budget

    @property
    def num_gpu_blocks(self) -> int:
        """KV blocks vLLM allocates (what it logs as its GPU blocks); see `usable_blocks`."""
        return self.budget.num_gpu_blocks

    @property
    def usable_blocks(self) -> int:
        """Blocks sequences can hold: vLLM V1 keeps block 0 as its null block."""
        return self.budget.num_gpu_blocks - NULL_BLOCKS

    @property
    def kv_slots(self) -> int:
        """Token slots of KV capacity (usable blocks x block size): what the simulator's caches hold."""
        return self.usable_blocks * self.block_size

    def num_cpu_blocks(self, swap_space_gib: float) -> int:
        """Blocks of CPU swap space per GPU for vLLM's ``--swap-space`` (GiB a GPU): the same bytes per
        block as on the GPU (vLLM's ``swap_space_bytes // cache_block_size``)."""
        if not (math.isfinite(swap_space_gib) and swap_space_gib >= 0):
            raise OptionError("swap_space", swap_space_gib, "must be a number of GiB >= 0")
        return int(swap_space_gib * GIB) // self.budget.bytes_per_block

    @property
    def kv_bytes_per_token(self) -> int:
        """KV bytes one token takes on each GPU (K/V heads split or replicated across GPUs)."""
        return self.model.kv_bytes_per_token(self.kv_cache_dtype, self.tensor_parallel_size)

    @property
    def batched_tokens(self) -> int:
        """``max_num_batched_tokens`` in force: the given value, else ``vllm serve``'s default."""
        if self.max_num_batched_tokens is not None:
            return self.max_num_batched_tokens
        return 8192 if self._large_gpu else 2048

    @property
    def num_seqs(self) -> int:
        """``max_num_seqs`` in force: the given value, else ``vllm serve``'s default."""
        if self.max_num_seqs is not None:
            return self.max_num_seqs
        return 1024 if self._large_gpu else 256

    def activation_estimate(self) -> int:
        """pagedkv's estimate of vLLM's profiled peak activation memory per GPU, in bytes.

        Forward pass over ``max_num_batched_tokens`` tokens (``T``), at its peak inside the MLP: the
        residual stream and the normalised hidden states (``2 x hidden``), the MLP's up/gate output and
        its activation (``3 x intermediate / TP`` gated, ``2 x`` plain), 16-bit each. Sampler on
        ``R = min(max_num_seqs, T)`` rows: fp32 logits and probabilities over the vocabulary. Both
        phases are added (conservative; for Meta-Llama-3-8B at T = 8,192 this gives 1.03 GiB where vLLM
        measured 1.26 GiB on an H100, vllm-project/vllm#10511).
        """
        m, tp = self.model, self.tensor_parallel_size
        mlp = (3 if m.gated_mlp else 2) * m.intermediate_size // tp
        forward = self.batched_tokens * 2 * (2 * m.hidden_size + mlp)
        sampler = min(self.num_seqs, self.batched_tokens) * m.vocab_size * SAMPLER_BYTES_PER_LOGIT
        return forward + sampler

    def step_time_model(self, **overrides: float) -> RooflineStepTime:
        """The roofline step-time model of this deployment; `overrides` set its efficiencies/latencies
        (``hbm_efficiency``, ``compute_efficiency``, ``host_overhead_s``, ``link_efficiency``,
        ``allreduce_latency_s``)."""
        return RooflineStepTime(
            self.model, self.gpu, self.tensor_parallel_size, self.kv_cache_dtype, **overrides
        )

    def describe(self) -> str:
        return (
            f"{self.model.name} on {self.tensor_parallel_size} x {self.gpu.name}, "
            f"kv_cache_dtype {self.kv_cache_dtype}: {self.kv_bytes_per_token / 1024:,.0f} KiB of KV a token "
            f"per GPU, {self.num_gpu_blocks:,} blocks of {self.block_size} = "
            f"{self.kv_slots:,} usable token slots"
        )

    # -- the sum ----------------------------------------------------------------------------------

    def _budget(self) -> MemoryBudget:
        m, g, tp = self.model, self.gpu, self.tensor_parallel_size
        bytes_per_block = self.block_size * self.kv_bytes_per_token
        terms: tuple[MemoryTerm, ...]
        if self.kv_cache_memory_bytes is not None:
            terms = (
                MemoryTerm(
                    "kv_cache_memory_bytes", self.kv_cache_memory_bytes, "given (vLLM --kv-cache-memory)"
                ),
            )
            kv = self.kv_cache_memory_bytes
        else:
            requested = int(g.memory_bytes * self.gpu_memory_utilization)
            activation, activation_source = self._activation()
            terms = (
                MemoryTerm(f"GPU memory ({g.name})", g.memory_bytes, g.source),
                MemoryTerm(
                    f"x gpu_memory_utilization {self.gpu_memory_utilization:g}",
                    requested - g.memory_bytes,
                    "vLLM requests this share of the total",
                ),
                MemoryTerm(
                    "weights",
                    -m.weight_bytes_per_gpu(tp),
                    f"{m.params_per_gpu(tp) / 1e9:.2f} B params per GPU x {m.weight_bytes_per_param} B "
                    f"({m.name}, embeddings and LM head included, TP {tp})",
                ),
                MemoryTerm("peak activations", -activation, activation_source),
                MemoryTerm(
                    "non-torch memory",
                    -self.non_torch_bytes,
                    "cuBLAS workspaces, kernels loaded while profiling "
                    "(vllm-project/vllm#12126 log: 0.16 GiB)",
                ),
            )
            kv = sum(term.bytes for term in terms)
        return MemoryBudget(terms, kv, bytes_per_block, max(kv, 0) // bytes_per_block)

    def _activation(self) -> tuple[int, str]:
        if self.activation_bytes is not None:
            return self.activation_bytes, "given (measured)"
        return self.activation_estimate(), (
            f"estimated: max_num_batched_tokens {self.batched_tokens:,} through the MLP, sampler on "
            f"{min(self.num_seqs, self.batched_tokens):,} rows (Deployment.activation_estimate)"
        )

    @property
    def _large_gpu(self) -> bool:
        return self.gpu.memory_bytes >= LARGE_GPU_BYTES and "a100" not in self.gpu.name.lower()

    # -- validation -------------------------------------------------------------------------------

    def _check_options(self) -> None:
        if not (0.0 < self.gpu_memory_utilization <= 1.0):
            raise OptionError("gpu_memory_utilization", self.gpu_memory_utilization, "must be in (0, 1]")
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise OptionError(
                "kv_cache_dtype", self.kv_cache_dtype, f"is not one of {', '.join(KV_CACHE_DTYPES)}"
            )
        for name in ("tensor_parallel_size", "block_size", "max_num_batched_tokens", "max_num_seqs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise OptionError(name, value, "must be a positive integer")
        for name in ("kv_cache_memory_bytes", "activation_bytes", "non_torch_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise OptionError(name, value, "must be a number of bytes >= 0")

    def _check_parallelism(self) -> None:
        """vLLM's own checks: heads, KV heads and the MLP must split evenly across the GPUs."""
        m, tp = self.model, self.tensor_parallel_size
        kv = m.num_kv_heads
        problems = []
        if m.num_attention_heads % tp:
            problems.append(f"num_attention_heads={m.num_attention_heads}")
        if (kv >= tp and kv % tp) or (kv < tp and tp % kv):
            problems.append(f"num_key_value_heads={kv}")
        if m.intermediate_size % tp:
            problems.append(f"intermediate_size={m.intermediate_size}")
        if problems:
            divisors = [n for n in range(1, m.num_attention_heads + 1) if _splits(m, n)]
            raise OptionError(
                "tensor_parallel_size",
                tp,
                f"does not divide {m.name}'s {', '.join(problems)}; "
                f"choose one of {', '.join(map(str, divisors[:12]))}",
            )


def _splits(model: ModelConfig, tp: int) -> bool:
    kv = model.num_kv_heads
    kv_ok = kv % tp == 0 if kv >= tp else tp % kv == 0
    return model.num_attention_heads % tp == 0 and model.intermediate_size % tp == 0 and kv_ok
