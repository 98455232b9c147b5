"""Next-token choice from logits: greedy argmax, or temperature / top-k / top-p sampling.

Like HF `generate` (and vLLM), logits are cast to float32 before choosing, so a float64 model
picks exactly the token HF picks, ties included (argmax returns the first maximum in both).
"""

from __future__ import annotations

import torch

from pagedkv.engine.sequence import Sequence


def sample(logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
    """One token per row of logits [len(seqs), vocab]; row i belongs to seqs[i]."""
    scores = logits.float()
    tokens = scores.argmax(dim=-1).tolist()
    for row, seq in enumerate(seqs):
        params = seq.request.sampling
        if not params.greedy:
            probs = _filtered_probs(scores[row] / params.temperature, params.top_k, params.top_p)
            tokens[row] = int(torch.multinomial(probs, 1, generator=seq.generator))
    return tokens


def _filtered_probs(scores: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Softmax over the tokens kept by top-k, then by top-p (smallest prefix of mass >= top_p)."""
    if 0 < top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs[mass_before >= top_p] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return probs
