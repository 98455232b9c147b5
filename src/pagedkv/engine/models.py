"""Random-weight HF models built from configs: no download is possible or needed.

The same seed gives the same weights, so tests, the CLI and the benchmarks can rebuild a model
bit-for-bit. Defaults are tiny (2 layers, hidden 64, 4 query heads over 2 KV heads) so float64 runs
fast on a CPU; every size is a keyword.
"""

from __future__ import annotations

from typing import Any

import torch

from pagedkv.engine.families import FAMILIES
from pagedkv.errors import InvalidArgument


def random_model(
    family: str = "llama",
    *,
    vocab_size: int = 256,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_position_embeddings: int = 256,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    **overrides: Any,
) -> torch.nn.Module:
    """A `LlamaForCausalLM` / `MistralForCausalLM` / `Qwen2ForCausalLM` / `Qwen3ForCausalLM` /
    `Gemma3ForCausalLM` in eval mode with seeded weights.

    `head_dim` is `hidden_size // num_heads` unless given (Qwen3's and Gemma 3's configs default to
    128 / 256 whatever the hidden size). Mistral's sliding window is off unless `sliding_window=` is
    given (HF's default of 4096 would never matter at these sizes, but an explicit None says so).
    `overrides` go to the config.
    """
    import transformers

    classes = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
        "gemma3": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM),
    }
    if family not in classes:
        raise InvalidArgument(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    settings: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "max_position_embeddings": max_position_embeddings,
        "head_dim": hidden_size // num_heads,
    }
    if family == "mistral":
        settings["sliding_window"] = None
    settings.update(overrides)
    config_class, model_class = classes[family]
    torch.manual_seed(seed)
    return model_class(config_class(**settings)).to(dtype).eval()
