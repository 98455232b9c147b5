"""A continuous-batching engine over HF Llama / Mistral / Qwen2 / Qwen3 / Gemma 3 models with a paged
KV cache, and `LLM`, the text-in text-out front end over a local checkpoint.

Needs the `torch` extra (`pip install pagedkv[torch]`). Usage::

    from pagedkv.engine import LLM, SamplingParams
    llm = LLM("path/to/checkpoint")
    outputs = llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=8))

    from pagedkv.engine import Engine                      # token ids in and out, any HF model object
    engine = Engine(model, num_blocks=256, block_size=16, enable_prefix_caching=True)
    outputs = engine.generate([[1, 2, 3], [4, 5]], SamplingParams(max_tokens=8))

Names are imported on first use (PEP 562), so `pagedkv.engine.cli` can register the `generate`
command, and `pagedkv --help` can run, without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Engine": "pagedkv.engine.engine",
    "EngineStats": "pagedkv.engine.engine",
    "LLM": "pagedkv.engine.llm",
    "CompletionOutput": "pagedkv.engine.request_output",
    "RequestOutput": "pagedkv.engine.request_output",
    "SamplingParams": "pagedkv.engine.sampling_params",
    "CheckpointError": "pagedkv.engine.errors",
    "InvalidPrompt": "pagedkv.engine.errors",
    "InvalidSamplingParams": "pagedkv.engine.errors",
    "PromptTooLong": "pagedkv.engine.errors",
    "UnsupportedModel": "pagedkv.engine.errors",
    "random_model": "pagedkv.engine.models",
    "save_tiny_checkpoint": "pagedkv.engine.tiny_checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pagedkv.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
