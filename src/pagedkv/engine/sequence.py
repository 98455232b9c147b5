"""Requests and the sequences they generate.

A request is one prompt asking for `n` samples; each sample is a `Sequence` with its own id in the
block manager. Invariant kept with the scheduler: while a sequence is running, the block manager
holds exactly `len(seq.tokens)` token slots for it, and the K/V of `seq.tokens[:num_computed]` is in
the paged cache (the last sampled token is the one still to be computed). Whether a sequence waits or
runs is the scheduler's to know (its two queues); a sequence only knows whether it has finished, and why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from pagedkv.engine.sampling_params import SamplingParams

FINISH_REASONS = ("length", "stop", "eos", "abort")
"""Why a sample ended: `max_tokens` reached; a stop string or one of `stop_token_ids`; the model's
EOS token; `Engine.abort_request`. (vLLM reports EOS as "stop" too; here it has its own name.)"""


@dataclass
class RequestMetrics:
    """Wall-clock times (`time.perf_counter()`) of one request's life."""

    arrival_time: float
    first_token_time: float | None = None
    last_token_time: float | None = None
    finished_time: float | None = None

    @property
    def ttft(self) -> float | None:
        """Time to first token: from `add_request` to the end of the step that sampled it."""
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    def tpot(self, num_tokens: int) -> float | None:
        """Time per output token after the first, for a sample of `num_tokens` tokens."""
        if self.first_token_time is None or self.last_token_time is None or num_tokens < 2:
            return None
        return (self.last_token_time - self.first_token_time) / (num_tokens - 1)


@dataclass(eq=False)
class Request:
    request_id: int
    prompt_token_ids: list[int]
    params: SamplingParams
    eos_token_ids: frozenset[int]  # empty when params.ignore_eos
    prompt: str | None = None  # the text the prompt came from, when it came from text
    seqs: list[Sequence] = field(default_factory=list)
    metrics: RequestMetrics = field(default_factory=lambda: RequestMetrics(time.perf_counter()))
    num_cached_tokens: int | None = None  # prompt tokens found in the prefix cache at first admission

    @property
    def finished(self) -> bool:
        return all(seq.finish_reason is not None for seq in self.seqs)

    @property
    def stop_token_ids(self) -> frozenset[int]:
        """Tokens that end a sample (and that cannot be sampled before `min_tokens`)."""
        return self.eos_token_ids | frozenset(self.params.stop_token_ids)


@dataclass(eq=False)
class Sequence:
    seq_id: int
    request: Request
    tokens: list[int]  # prompt + generated
    num_computed: int = 0
    generator: torch.Generator | None = None  # None: greedy
    finish_reason: str | None = None  # one of FINISH_REASONS once finished
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it
    text: str = ""  # decoded output, cut before a stop string (empty without a tokenizer)
    logprobs: list[dict[int, float]] | None = None  # per generated token, when params.logprobs is set
    cumulative_logprob: float = 0.0

    @property
    def generated(self) -> list[int]:
        return self.tokens[len(self.request.prompt_token_ids) :]

    @property
    def num_generated(self) -> int:
        return len(self.tokens) - len(self.request.prompt_token_ids)

    def append_token(self, token: int) -> None:
        """Record a sampled token and finish the sequence if the token ends it (EOS, a stop token id,
        or `max_tokens`); stop strings are the detokenizer's to find."""
        self.tokens.append(token)
        params = self.request.params
        if self.num_generated >= params.min_tokens:
            if token in self.request.eos_token_ids:
                self.finish("eos")
            elif token in params.stop_token_ids:
                self.finish("stop", token)
        if self.finish_reason is None and self.num_generated >= params.max_tokens:
            self.finish("length")

    def finish(self, reason: str, stop_reason: int | str | None = None) -> None:
        self.finish_reason = reason
        self.stop_reason = stop_reason
