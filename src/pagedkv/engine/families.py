"""The model families the engine runs: one table, read by the CLI (without torch), the model builder
and the model runner.

Key: the family name users type (`pagedkv generate --family`, `random_model(family)`); value: the
`model_type` in the checkpoint's config.json that the runner accepts. Gemma 3's text model is
`gemma3_text` (its `Gemma3ForCausalLM`); the multimodal `gemma3` wrapper is not a causal LM alone.
"""

from __future__ import annotations

FAMILIES: dict[str, str] = {
    "llama": "llama",
    "mistral": "mistral",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma3": "gemma3_text",
}

SUPPORTED_MODEL_TYPES = tuple(FAMILIES.values())
