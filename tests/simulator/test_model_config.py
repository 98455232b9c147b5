"""Models from Hugging Face configs: KV bytes per token, parameters, FLOPs, windows, and one-line errors.

Every expected number is written out as the arithmetic on the config's numbers, so a reader can check
it against the model's public config.json without running pagedkv.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from pagedkv.simulator.model_config import ModelConfig, ModelConfigError, catalogue, catalogue_source

LLAMA_8B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def _write(tmp_path: Path, config: dict[str, Any], name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


def test_llama_3_1_8b_from_the_catalogue_matches_its_config_by_hand() -> None:
    model = ModelConfig.from_pretrained("Llama-3.1-8B")
    assert model.kv_bytes_per_token() == 2 * 32 * 8 * 128 * 2 == 131_072  # GQA: 8 KV heads, not 32
    embed = 128256 * 4096
    layer = 4096 * 4096 + 2 * 4096 * 1024 + 4096 * 4096 + 3 * 4096 * 14336 + 2 * 4096
    assert model.num_params == embed + 32 * layer + 4096 + embed == 8_030_261_248  # untied LM head
    assert model.weight_bytes_per_gpu() == 8_030_261_248 * 2  # 14.96 GiB, what vLLM logs for it


def test_catalogue_models_bytes_per_token_and_params() -> None:
    cases = {
        "Llama-3.1-70B": (2 * 80 * 8 * 128 * 2, 70_553_706_496),
        "Qwen2.5-7B": (2 * 28 * 4 * 128 * 2, 7_615_616_512),  # Qwen's model card: 7.61 B
        "Qwen2.5-72B": (2 * 80 * 8 * 128 * 2, 72_706_203_648),  # 72.7 B
        "Mistral-7B": (2 * 32 * 8 * 128 * 2, 7_241_732_096),  # 7.24 B
        "OPT-66B": (2 * 64 * 72 * 128 * 2, 65_719_701_504),  # 66 B
        "OPT-175B": (2 * 96 * 96 * 128 * 2, 174_604_468_224),  # 175 B
    }
    for name, (kv, params) in cases.items():
        model = ModelConfig.from_pretrained(name)
        assert (model.kv_bytes_per_token(), model.num_params) == (kv, params), name


def test_opt_13b_counts_positions_biases_and_a_tied_lm_head() -> None:
    model = ModelConfig.from_pretrained("facebook/opt-13b")  # by Hugging Face id too
    h, f = 5120, 20480
    layer = 4 * (h * h + h) + (h * f + f) + (f * h + h) + 2 * 2 * h  # q k v o, fc1, fc2, 2 LayerNorms
    embed, positions = 50272 * h, (2048 + 2) * h
    assert model.num_params == embed + positions + 40 * layer + 2 * h == 12_853_473_280  # LM head tied
    assert model.kv_bytes_per_token() == 2 * 40 * 40 * 128 * 2 == 800 * 1024  # the paper's 800 KiB
    # a prompt token goes through the layers; a decoded token through the (tied) LM head as well
    linear = 40 * (4 * h * h + 2 * h * f)
    assert model.flops_per_token(lm_head=False) == 2 * linear
    assert model.flops_per_token(lm_head=True) == 2 * (linear + embed)


def test_explicit_head_dim_wins_over_hidden_over_heads() -> None:
    config = {**LLAMA_8B, "hidden_size": 5120, "num_hidden_layers": 40, "head_dim": 128, "vocab_size": 131072}
    model = ModelConfig.from_dict(config)
    assert model.head_dim == 128  # not 5120 / 32 = 160
    assert model.kv_bytes_per_token() == 2 * 40 * 8 * 128 * 2 == 163_840
    q_and_o = 2 * 5120 * (32 * 128)
    kv = 2 * 5120 * (8 * 128)
    assert model.matmul_params_per_gpu(lm_head=False) == 40 * (q_and_o + kv + 3 * 5120 * 14336)


def test_missing_kv_heads_means_multi_head_attention() -> None:
    config = {k: v for k, v in LLAMA_8B.items() if k != "num_key_value_heads"}
    assert ModelConfig.from_dict(config).kv_bytes_per_token() == 2 * 32 * 32 * 128 * 2


def test_tied_embeddings_are_stored_once_but_multiplied_through() -> None:
    untied = ModelConfig.from_dict(LLAMA_8B)
    tied = ModelConfig.from_dict({**LLAMA_8B, "tie_word_embeddings": True})
    assert untied.num_params - tied.num_params == 128256 * 4096
    assert tied.flops_per_token() == untied.flops_per_token()


def test_fp8_kv_cache_halves_the_bytes_per_token() -> None:
    model = ModelConfig.from_dict(LLAMA_8B)
    for dtype in ("fp8", "fp8_e4m3", "fp8_e5m2"):
        assert model.kv_bytes_per_token(dtype) == 2 * 32 * 8 * 128 * 1 == 65_536
    assert model.kv_bytes_per_token("auto") == model.kv_bytes_per_token("bfloat16") == 131_072
    with pytest.raises(ModelConfigError, match="kv_cache_dtype 'int4'"):
        model.kv_bytes_per_token("int4")


def test_tensor_parallelism_splits_kv_heads_and_replicates_them_when_fewer_than_gpus() -> None:
    model = ModelConfig.from_pretrained("Llama-3.1-70B")  # 8 KV heads
    assert model.kv_bytes_per_token(tensor_parallel_size=4) == 2 * 80 * (8 // 4) * 128 * 2 == 81_920
    # 16 GPUs, 8 heads: each GPU keeps one whole head (vLLM's max(1, 8 // 16)), twice 327,680 / 16
    assert model.kv_bytes_per_token(tensor_parallel_size=16) == 2 * 80 * 1 * 128 * 2 == 40_960
    mqa = ModelConfig.from_dict({**LLAMA_8B, "num_key_value_heads": 1})
    assert mqa.kv_bytes_per_token(tensor_parallel_size=4) == mqa.kv_bytes_per_token() == 2 * 32 * 128 * 2


def test_tensor_parallel_weights_split_except_replicated_kv_projections() -> None:
    model = ModelConfig.from_pretrained("Llama-3.1-8B")
    h, kv_width = 4096, 8 * 128
    sharded = 32 * (2 * h * h + 3 * h * 14336) + 2 * 128256 * h  # q, o, MLP, embedding, LM head
    replicated = 32 * 2 * h + h  # norms
    assert model.params_per_gpu(2) == sharded // 2 + 32 * 2 * h * (kv_width // 2) + replicated
    assert model.weight_bytes_per_gpu(2) * 2 == pytest.approx(model.weight_bytes_per_gpu(1), rel=1e-4)
    # 8 KV heads on 16 GPUs: each GPU stores the K/V projection of one full head
    big = ModelConfig.from_pretrained("Llama-3.1-70B")
    assert big.params_per_gpu(16) - big.params_per_gpu(8) == pytest.approx(
        -(80 * (2 * 8192 * 8192 + 3 * 8192 * 28672) + 2 * 128256 * 8192) // 16, rel=1e-9
    )


def test_sliding_window_caps_the_tokens_a_sequence_keeps() -> None:
    mistral = ModelConfig.from_pretrained("Mistral-7B")
    assert mistral.sliding_window == 4096
    assert (mistral.kv_tokens(1000), mistral.kv_tokens(10_000)) == (1000, 4096)
    assert "sliding window 4,096" in mistral.describe()
    llama = ModelConfig.from_pretrained("Llama-3.1-8B")
    assert llama.sliding_window is None and llama.kv_tokens(10_000) == 10_000


def test_qwen2_window_applies_only_with_use_sliding_window() -> None:
    qwen = ModelConfig.from_pretrained("Qwen2.5-7B").sliding_window
    assert qwen is None  # its config sets use_sliding_window false
    base = {**LLAMA_8B, "model_type": "qwen2", "sliding_window": 4096, "max_window_layers": 0}
    assert ModelConfig.from_dict({**base, "use_sliding_window": False}).sliding_window is None
    assert ModelConfig.from_dict({**base, "use_sliding_window": True}).sliding_window == 4096
    with pytest.raises(ModelConfigError, match="mixes full and sliding-window layers"):
        ModelConfig.from_dict({**base, "use_sliding_window": True, "max_window_layers": 16})


def test_qwen2_has_qkv_biases() -> None:
    llama = ModelConfig.from_dict(LLAMA_8B)
    qwen = ModelConfig.from_dict({**LLAMA_8B, "model_type": "qwen2"})
    assert qwen.num_params - llama.num_params == 32 * (32 * 128 + 2 * 8 * 128)


def test_a_checkpoint_folder_or_file_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    _write(folder, LLAMA_8B)
    by_folder = ModelConfig.from_pretrained(folder)
    assert by_folder.name == "my-model" and by_folder.source == str(folder / "config.json")
    assert ModelConfig.from_pretrained(folder / "config.json").num_params == by_folder.num_params


def test_every_catalogue_model_parses_and_cites_its_source() -> None:
    assert {"Llama-3.1-8B", "Llama-3.1-70B", "Qwen2.5-7B", "Qwen2.5-72B", "Mistral-7B"} <= set(catalogue())
    assert {"OPT-13B", "OPT-66B", "OPT-175B"} <= set(catalogue())
    for name in catalogue():
        model = ModelConfig.from_pretrained(name.lower())
        assert model.name == name and model.source == catalogue_source(name)
        assert "huggingface.co" in model.source or "arXiv" in model.source


def test_models_are_picklable_and_comparable() -> None:
    model = ModelConfig.from_pretrained("OPT-13B")
    assert pickle.loads(pickle.dumps(model)) == model


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_hidden_layers": None}, "missing key 'num_hidden_layers'"),
        ({"hidden_size": "4096"}, "hidden_size='4096' must be a positive integer"),
        ({"num_attention_heads": 0}, "num_attention_heads=0 must be a positive integer"),
        ({"intermediate_size": True}, "intermediate_size=True must be a positive integer"),
        ({"tie_word_embeddings": "no"}, "tie_word_embeddings='no' must be true or false"),
        ({"model_type": "gpt2"}, "model_type='gpt2' is not supported"),
        ({"model_type": None}, "missing key 'model_type'"),
        ({"num_key_value_heads": 5}, "not a multiple of num_key_value_heads=5"),
        ({"torch_dtype": "int8"}, "torch_dtype='int8'"),
        ({"quantization_config": {"bits": 4}}, "quantized weights are not modelled"),
    ],
)
def test_bad_configs_give_one_line_naming_key_and_file(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    config = {k: v for k, v in {**LLAMA_8B, **change}.items() if v is not None}
    path = _write(tmp_path, config)
    with pytest.raises(ModelConfigError) as info:
        ModelConfig.from_pretrained(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text


def test_unreadable_inputs_give_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "hidden_size": 4096,\n  oops\n}')
    with pytest.raises(ModelConfigError, match=r"broken.json:3: not valid JSON"):
        ModelConfig.from_pretrained(broken)
    with pytest.raises(ModelConfigError, match=r"folder has no config\.json"):
        ModelConfig.from_pretrained(tmp_path)
    with pytest.raises(ModelConfigError, match=r"model 'Llama-9'.*catalogue name \(Llama-3.1-8B"):
        ModelConfig.from_pretrained("Llama-9")
    with pytest.raises(ModelConfigError, match="expected a JSON object, got list"):
        ModelConfig.from_pretrained(_write(tmp_path, [1, 2], "list.json"))  # type: ignore[arg-type]
