"""The hardware and model the paper's memory figures were measured on, as numbers the simulator can use.

Invariant: every derived quantity (bytes per token, KV capacity in token slots and blocks) is computed from
the model and GPU figures stated here, never typed in, so changing one input changes everything that
depends on it and the report can print where each number came from.

The setting (Kwon et al., SOSP 2023, §6.1 and the authors' artifact, github.com/sosp-ae-39/sosp-ae-astra):
OPT-13B in fp16 on one A100-40GB, whose ~12 GiB left for the KV cache after weights and activations holds
~15.7K tokens at 800 KiB a token.
"""

from __future__ import annotations

from dataclasses import dataclass

from pagedkv.errors import InvalidArgument

GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A decoder-only transformer, as far as KV memory and iteration time care.

    OPT-13B (HF config facebook/opt-13b): 40 layers, hidden size 5120, 40 heads, FFN 20480, vocabulary 50272,
    2048 positions; 12.85 B parameters.
    """

    name: str = "OPT-13B"
    num_layers: int = 40
    hidden_size: int = 5120
    num_params: float = 12.85e9
    dtype_bytes: int = 2  # fp16
    max_seq_len: int = 2048

    @property
    def kv_bytes_per_token(self) -> int:
        """One K and one V vector of `hidden_size` per layer: 2 * 40 * 5120 * 2 B = 800 KiB for OPT-13B."""
        return 2 * self.num_layers * self.hidden_size * self.dtype_bytes

    @property
    def weight_bytes(self) -> float:
        """Bytes of weights every iteration reads once from GPU memory."""
        return self.num_params * self.dtype_bytes

    @property
    def flops_per_token(self) -> float:
        """Matrix-multiply FLOPs to push one token through the model (2 per parameter)."""
        return 2.0 * self.num_params


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """The accelerator: how much KV memory it leaves and how fast it reads memory and multiplies.

    A100-SXM4-40GB datasheet: 1,555 GB/s HBM2, 312 TFLOP/s dense fp16 tensor-core peak. `kv_cache_bytes` is
    what is left for the KV cache once OPT-13B's 26 GB of weights and the activation workspace are placed:
    the paper's Fig. 1 puts it at just over 30 % of the 40 GB, and 12 GiB reproduces its Orca (Max) bar,
    whose 8.9 % "external" is exactly the 87 of 983 blocks that no 128-block (2048-token) slot fits in.
    """

    name: str = "A100-40GB"
    kv_cache_bytes: int = 12 * GIB
    hbm_bytes_per_s: float = 1.555e12
    peak_flops: float = 312e12


@dataclass(frozen=True, slots=True)
class PaperSetting:
    """Model + GPU + block size + vLLM's watermark: everything that fixes the KV pool.

    `watermark` is the fraction of vLLM's blocks that admission leaves free so running sequences can
    grow without preemption (1 % in the artifact's block manager).
    """

    model: ModelSpec = ModelSpec()
    gpu: GpuSpec = GpuSpec()
    block_size: int = 16
    watermark: float = 0.01

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise InvalidArgument(f"block_size={self.block_size} must be >= 1 token")
        if self.num_blocks < 1:
            raise InvalidArgument(
                f"kv_cache_bytes={self.gpu.kv_cache_bytes} holds no block of {self.block_size} tokens "
                f"at {self.model.kv_bytes_per_token} bytes a token; give the GPU more KV memory"
            )

    @property
    def num_blocks(self) -> int:
        """Whole blocks of `block_size` tokens that fit in the KV memory: 983 for OPT-13B, 12 GiB, B = 16."""
        return self.gpu.kv_cache_bytes // (self.block_size * self.model.kv_bytes_per_token)

    @property
    def num_slots(self) -> int:
        """Token slots of KV capacity: the 100 % that every breakdown is a share of."""
        return self.num_blocks * self.block_size

    def with_block_size(self, block_size: int) -> PaperSetting:
        """The same GPU and model with another block size (Fig. 18b): capacity is re-cut into blocks."""
        return PaperSetting(self.model, self.gpu, block_size, self.watermark)

    def describe(self) -> str:
        m, g = self.model, self.gpu
        return (
            f"{m.name} fp16 on one {g.name}: {m.kv_bytes_per_token // 1024} KiB of KV a token, "
            f"{g.kv_cache_bytes / GIB:.0f} GiB of KV = {self.num_slots:,} token slots "
            f"({self.num_blocks} blocks of {self.block_size}); max sequence {m.max_seq_len} tokens"
        )
