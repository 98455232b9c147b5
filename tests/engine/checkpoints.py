"""HF references for the tests on tiny checkpoints (`pagedkv.engine.tiny_checkpoint`)."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

from pagedkv.engine.tiny_checkpoint import save_tiny_checkpoint as save_checkpoint

__all__ = ["hf_reference", "save_checkpoint"]


def hf_reference(folder: Path, prompt_ids: list[int], max_new_tokens: int, **generate_kwargs) -> list[int]:
    """HF `generate` (greedy) on the saved checkpoint: the generated ids."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64).eval()
    ids = torch.tensor([prompt_ids])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        **generate_kwargs,
    )
    return out[0, len(prompt_ids) :].tolist()
