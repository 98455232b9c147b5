"""KV blocks as vLLM computes them, term by term, checked by hand and against vLLM's own logs."""

from __future__ import annotations

import pickle

import pytest

from pagedkv.simulator.deployment import Deployment
from pagedkv.simulator.gpu import GIB, GpuSpec, GpuSpecError, catalogue
from pagedkv.simulator.model_config import ModelConfig
from pagedkv.simulator.option_error import OptionError

LLAMA_8B = ModelConfig.from_pretrained("Llama-3.1-8B")
H100 = GpuSpec.from_name("H100-80GB")


def test_llama_8b_on_one_h100_by_hand() -> None:
    deployment = Deployment(LLAMA_8B, H100, activation_bytes=GIB, non_torch_bytes=0)
    requested = int(80 * GIB * 0.9)  # 77,309,411,328
    kv = requested - 8_030_261_248 * 2 - GIB  # weights at 2 bytes; 1 GiB of activations given
    block = 16 * (2 * 32 * 8 * 128 * 2)  # 16 tokens x 128 KiB = 2 MiB
    assert deployment.memory_terms().kv_cache_bytes == kv == 60_175_147_008
    assert deployment.num_gpu_blocks == kv // block == 28_693
    assert deployment.usable_blocks == 28_692  # vLLM V1 keeps block 0 as its null block
    assert deployment.kv_slots == 28_692 * 16


def test_block_count_matches_vllms_log_on_an_a100_40gb() -> None:
    """vllm-project/vllm#12330: Meta-Llama-3-8B on one A100-40GB logs total 39.50 GiB x 0.90, weights
    14.96 GiB, non-torch 0.10 GiB, activation peak 9.37 GiB, KV 11.12 GiB and "# GPU blocks: 5691".
    With the measured terms given, pagedkv's sum lands on vLLM's count up to the log's rounding
    (each GiB printed to 0.01, ~5 blocks per term)."""
    model = ModelConfig.from_dict({**_LLAMA_3_8B, "max_position_embeddings": 8192})
    gpu = GpuSpec("A100-40GB as CUDA reports it", memory_gib=39.50, hbm_gb_per_s=1555, bf16_tflops=312)
    deployment = Deployment(model, gpu, activation_bytes=int(9.37 * GIB), non_torch_bytes=int(0.10 * GIB))
    assert deployment.memory_terms().kv_cache_bytes / GIB == pytest.approx(11.12, abs=0.01)
    assert abs(deployment.num_gpu_blocks - 5691) <= 10


def test_available_memory_matches_vllms_log_on_an_h100() -> None:
    """vllm-project/vllm#10511: total 79.22 GiB x 0.90, weights 14.96, non-torch 1.79, activation 1.26
    -> available_kv_cache_memory 53.29 GiB (Meta-Llama-3-8B)."""
    model = ModelConfig.from_dict({**_LLAMA_3_8B, "max_position_embeddings": 8192})
    gpu = GpuSpec("H100 as CUDA reports it", memory_gib=79.22, hbm_gb_per_s=3350, bf16_tflops=989)
    deployment = Deployment(model, gpu, activation_bytes=int(1.26 * GIB), non_torch_bytes=int(1.79 * GIB))
    assert deployment.memory_terms().kv_cache_bytes / GIB == pytest.approx(53.29, abs=0.01)


def test_memory_terms_list_every_term_with_a_source() -> None:
    budget = Deployment(LLAMA_8B, H100).memory_terms()
    labels = [term.label for term in budget.terms]
    assert labels == [
        "GPU memory (H100-80GB)",
        "x gpu_memory_utilization 0.9",
        "weights",
        "peak activations",
        "non-torch memory",
    ]
    assert all(term.source for term in budget.terms)
    assert sum(term.bytes for term in budget.terms) == budget.kv_cache_bytes
    text = budget.format()
    assert "= KV cache per GPU" in text and "2.00 MiB" in text and f"{budget.num_gpu_blocks:,} blocks" in text


def test_tensor_parallelism_divides_weights_and_kv_per_gpu() -> None:
    model = ModelConfig.from_pretrained("Llama-3.1-70B")
    one = Deployment(model, GpuSpec.from_name("MI300X"), activation_bytes=0, non_torch_bytes=0)
    four = Deployment(model, H100, tensor_parallel_size=4, activation_bytes=0, non_torch_bytes=0)
    assert four.kv_bytes_per_token == 2 * 80 * 2 * 128 * 2  # 2 of the 8 KV heads on each GPU
    weights = model.weight_bytes_per_gpu(4)
    assert four.memory_terms().kv_cache_bytes == int(80 * GIB * 0.9) - weights
    assert four.num_gpu_blocks == (int(80 * GIB * 0.9) - weights) // (16 * 81_920)
    assert one.num_gpu_blocks == (int(192 * GIB * 0.9) - model.weight_bytes_per_gpu(1)) // (16 * 327_680)


def test_fp8_kv_cache_doubles_the_blocks_of_the_same_memory() -> None:
    common = {"activation_bytes": GIB, "non_torch_bytes": 0}
    auto = Deployment(LLAMA_8B, H100, **common)
    fp8 = Deployment(LLAMA_8B, H100, kv_cache_dtype="fp8", **common)
    assert fp8.memory_terms().kv_cache_bytes == auto.memory_terms().kv_cache_bytes
    assert fp8.num_gpu_blocks == auto.memory_terms().kv_cache_bytes // (16 * 65_536) == 2 * 28_693 + 1


def test_activation_reserve_grows_with_max_num_batched_tokens() -> None:
    small = Deployment(LLAMA_8B, H100, max_num_batched_tokens=2048, max_num_seqs=256)
    large = Deployment(LLAMA_8B, H100, max_num_batched_tokens=4096, max_num_seqs=256)
    per_token = 2 * (2 * 4096 + 3 * 14336)  # residual + normed hidden, gate/up + activation, 2 bytes
    assert large.activation_estimate() - small.activation_estimate() == 2048 * per_token
    sampler = 256 * 128256 * 8  # fp32 logits + probabilities of max_num_seqs rows
    assert small.activation_estimate() == 2048 * per_token + sampler
    assert small.num_gpu_blocks > large.num_gpu_blocks


def test_defaults_follow_vllm_serve() -> None:
    assert (Deployment(LLAMA_8B, H100).batched_tokens, Deployment(LLAMA_8B, H100).num_seqs) == (8192, 1024)
    a100 = Deployment(LLAMA_8B, GpuSpec.from_name("A100-80GB"))  # vLLM keeps the A100 on the small defaults
    assert (a100.batched_tokens, a100.num_seqs) == (2048, 256)
    l40s = Deployment(LLAMA_8B, GpuSpec.from_name("L40S"))
    assert (l40s.batched_tokens, l40s.num_seqs) == (2048, 256)


def test_kv_cache_memory_bytes_skips_profiling() -> None:
    """The paper's measured 12 GiB: 12 GiB // (16 x 800 KiB) = 983 blocks."""
    opt = ModelConfig.from_pretrained("OPT-13B")
    deployment = Deployment(opt, GpuSpec.from_name("A100-40GB"), kv_cache_memory_bytes=12 * GIB)
    assert deployment.num_gpu_blocks == 12 * GIB // (16 * 800 * 1024) == 983
    assert [t.label for t in deployment.memory_terms().terms] == ["kv_cache_memory_bytes"]


def test_step_time_model_uses_the_deployments_parallelism_and_dtype() -> None:
    model = Deployment(LLAMA_8B, H100, tensor_parallel_size=2, kv_cache_dtype="fp8").step_time_model(
        host_overhead_s=0.0
    )
    assert (model.tensor_parallel_size, model.kv_cache_dtype, model.host_overhead_s) == (2, "fp8", 0.0)


def test_swap_space_in_blocks_of_the_same_size() -> None:
    deployment = Deployment(LLAMA_8B, H100)
    assert deployment.num_cpu_blocks(4) == 4 * GIB // (16 * 131_072) == 2048  # vLLM's default 4 GiB
    assert Deployment(LLAMA_8B, H100, tensor_parallel_size=2).num_cpu_blocks(4) == 4 * GIB // (16 * 65_536)
    with pytest.raises(OptionError, match="swap_space=-1"):
        deployment.num_cpu_blocks(-1)


def test_deployments_are_picklable() -> None:
    deployment = Deployment(LLAMA_8B, H100)
    copy = pickle.loads(pickle.dumps(deployment))
    assert copy == deployment and copy.num_gpu_blocks == deployment.num_gpu_blocks


@pytest.mark.parametrize(
    ("kwargs", "option", "message"),
    [
        ({"tensor_parallel_size": 3}, "tensor_parallel_size", "tensor_parallel_size=3 does not divide"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size", "tensor_parallel_size=0 must be a positive"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization", "gpu_memory_utilization=1.5"),
        ({"gpu_memory_utilization": 0.2}, "gpu_memory_utilization", "leaves -"),
        ({"kv_cache_dtype": "fp4"}, "kv_cache_dtype", "kv_cache_dtype='fp4' is not one of auto"),
        ({"block_size": 0}, "block_size", "block_size=0"),
        ({"max_num_batched_tokens": -1}, "max_num_batched_tokens", "max_num_batched_tokens=-1"),
        ({"activation_bytes": -5}, "activation_bytes", "activation_bytes=-5"),
    ],
)
def test_bad_options_name_the_option(kwargs: dict[str, object], option: str, message: str) -> None:
    with pytest.raises(OptionError) as info:
        Deployment(LLAMA_8B, H100, **kwargs)  # type: ignore[arg-type]
    assert info.value.option == option and message in str(info.value) and "\n" not in str(info.value)
    assert info.value.flag_message().startswith("--" + option.replace("_", "-") + " ")


def test_a_model_too_large_for_the_gpu_is_refused_with_the_remedy() -> None:
    with pytest.raises(OptionError, match="raise --tensor-parallel-size") as info:
        Deployment(ModelConfig.from_pretrained("Llama-3.1-70B"), H100)
    assert str(info.value).startswith("gpu_memory_utilization=0.9 leaves -")  # negative KV memory, as is
    assert info.value.flag_message().startswith("--gpu-memory-utilization 0.9: leaves -")


def test_gpu_catalogue_and_explicit_numbers() -> None:
    assert {"A100-40GB", "A100-80GB", "H100-80GB", "H200", "L40S", "L4", "MI300X"} <= set(catalogue())
    for name in catalogue():
        gpu = GpuSpec.from_name(name)
        assert gpu.source.startswith(("NVIDIA", "AMD")) and "http" in gpu.source
    h100 = GpuSpec.from_name("h100")  # aliases, any case
    assert (h100.name, h100.memory_bytes, h100.hbm_bytes_per_s, h100.peak_flops) == (
        "H100-80GB",
        80 * GIB,
        3350e9,
        989e12,
    )
    assert GpuSpec.from_name("A100-40GB").fp8_tflops is None  # Ampere has no fp8 tensor cores
    with pytest.raises(GpuSpecError, match=r"GPU 'B200' is not in the catalogue; choose one of A100-40GB"):
        GpuSpec.from_name("B200")
    with pytest.raises(GpuSpecError, match="memory_gib=0"):
        GpuSpec("mine", memory_gib=0, hbm_gb_per_s=1000, bf16_tflops=100)
    with pytest.raises(GpuSpecError, match="hbm_gb_per_s=nan"):
        GpuSpec("mine", memory_gib=24, hbm_gb_per_s=float("nan"), bf16_tflops=100)


_LLAMA_3_8B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
