"""Next-token choice from logits, in vLLM's order of processing.

Per row (one sequence): logits are cast to float32 (as HF `generate` and vLLM do, so a float64 model
picks exactly HF's token, ties included); the raw log-probabilities are kept if the request asked for
`logprobs`; before `min_tokens`, EOS and the stop token ids are masked out; the repetition penalty
is applied over the prompt and the output; then greedy argmax, or temperature -> min-p -> top-k ->
top-p -> a draw from the sequence's own generator.

Rows that need none of this (greedy, no penalty, no min_tokens, no logprobs: the common case in
benchmarks) take one batched argmax and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pagedkv.engine.sequence import Sequence


@dataclass(frozen=True)
class SampledToken:
    token: int
    logprobs: dict[int, float] | None  # the sampled token's and the top-k's, when asked for


def sample(logits: torch.Tensor, seqs: list[Sequence]) -> list[SampledToken]:
    """One token per row of logits [len(seqs), vocab]; row i belongs to seqs[i]."""
    scores = logits.float()
    tokens = scores.argmax(dim=-1).tolist()
    out = []
    for row, seq in enumerate(seqs):
        if _plain_greedy(seq):
            out.append(SampledToken(tokens[row], None))
        else:
            out.append(_sample_row(scores[row], seq))
    return out


def _plain_greedy(seq: Sequence) -> bool:
    params = seq.request.params
    return (
        params.greedy
        and params.repetition_penalty == 1.0
        and params.logprobs is None
        and seq.num_generated >= params.min_tokens
    )


def _sample_row(scores: torch.Tensor, seq: Sequence) -> SampledToken:
    params = seq.request.params
    raw_logprobs = torch.log_softmax(scores, dim=-1) if params.logprobs is not None else None
    if seq.num_generated < params.min_tokens:
        banned = [t for t in seq.request.stop_token_ids if t < scores.shape[-1]]
        scores = scores.index_fill(0, torch.tensor(banned, dtype=torch.long), float("-inf"))
    if params.repetition_penalty != 1.0:
        scores = apply_repetition_penalty(scores, seq.tokens, params.repetition_penalty)
    if params.greedy:
        token = int(scores.argmax())
    else:
        probs = filtered_probs(scores / params.temperature, params.min_p, params.top_k, params.top_p)
        token = int(torch.multinomial(probs, 1, generator=seq.generator))
    return SampledToken(token, None if raw_logprobs is None else _top_logprobs(raw_logprobs, token, params))


def apply_repetition_penalty(scores: torch.Tensor, seen: list[int], penalty: float) -> torch.Tensor:
    """HF's and vLLM's rule on every token seen so far: logit / penalty if > 0, logit * penalty if < 0."""
    index = torch.tensor(sorted(set(seen)), dtype=torch.long)
    picked = scores.index_select(0, index)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.index_copy(0, index, picked)


def filtered_probs(scores: torch.Tensor, min_p: float, top_k: int, top_p: float) -> torch.Tensor:
    """Softmax over the tokens kept by min-p, then top-k, then top-p (smallest prefix of mass >= top_p)."""
    if min_p > 0:
        probs = torch.softmax(scores, dim=-1)
        scores = scores.masked_fill(probs < min_p * probs.max(), float("-inf"))
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


def _top_logprobs(logprobs: torch.Tensor, token: int, params) -> dict[int, float]:
    """The sampled token's logprob and the `params.logprobs` largest (vLLM: k or k + 1 entries)."""
    entries = {token: float(logprobs[token])}
    if params.logprobs:
        values, ids = torch.topk(logprobs, min(params.logprobs, logprobs.shape[-1]))
        entries.update(zip(ids.tolist(), values.tolist(), strict=True))
    return entries
