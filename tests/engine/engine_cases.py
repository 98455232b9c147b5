"""Shared cases for the engine tests: seeded prompts and HF greedy references.

Models are built from configs with seeded random weights, in float64: random weights give
near-tied logits, and float64 keeps rounding far below any gap the greedy choice depends on.
"""

from __future__ import annotations

import torch

from pagedkv.engine import SamplingParams

BLOCK_SIZE = 4
MAX_NEW_TOKENS = 10


def make_prompts(seed: int = 0, vocab: int = 256) -> list[list[int]]:
    """10 prompts, lengths 1..23 (five are multiples of 4); several share a 12-token prefix, one repeats."""
    gen = torch.Generator().manual_seed(seed)

    def rand(n: int) -> list[int]:
        return torch.randint(0, vocab, (n,), generator=gen).tolist()

    base, other = rand(12), rand(8)
    return [
        rand(5),
        base + rand(3),
        list(base),  # whole prompt in the cache once the previous prompt is in
        other,
        base[:8] + rand(9),
        rand(1),
        rand(16),
        base + rand(11),
        rand(4),
        list(other),  # an exact repeat
    ]


def hf_greedy(model, prompt: list[int], max_new_tokens: int = MAX_NEW_TOKENS) -> list[int]:
    """HF generate with its default cache, one unpadded prompt at a time: the unambiguous reference."""
    ids = torch.tensor([prompt])
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens
    )
    return out[0, len(prompt) :].tolist()


def greedy(max_tokens: int = MAX_NEW_TOKENS, **fields) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **fields)


def first_samples(outputs) -> list[list[int]]:
    """The token ids of sample 0 of each RequestOutput."""
    return [output.outputs[0].token_ids for output in outputs]


def all_samples(outputs) -> list[list[list[int]]]:
    """The token ids of every sample of each RequestOutput."""
    return [[sample.token_ids for sample in output.outputs] for output in outputs]
