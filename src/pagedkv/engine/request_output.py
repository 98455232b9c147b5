"""What a request gives back: `RequestOutput` with one `CompletionOutput` per sample (vLLM's names).

Outputs are snapshots: built from the engine's sequences at the end of a step, never shared with
them, so a caller may keep or change them without touching the engine's state.
"""

from __future__ import annotations

from dataclasses import dataclass

from pagedkv.engine.sequence import Request, Sequence


@dataclass(frozen=True)
class CompletionOutput:
    index: int  # which of the request's n samples
    text: str  # decoded output, cut before a stop string; "" when the engine has no tokenizer
    token_ids: list[int]  # every generated token, the EOS / stop token included
    finish_reason: str | None  # None while running; else "length", "stop", "eos" or "abort"
    stop_reason: int | str | None  # the stop string or stop token id, when finish_reason == "stop"
    logprobs: list[dict[int, float]] | None  # per token: sampled token and the top `logprobs`
    cumulative_logprob: float | None  # sum of the sampled tokens' logprobs, when logprobs was set


@dataclass(frozen=True)
class RequestOutput:
    request_id: int
    prompt: str | None  # the text prompt, when the request came as text
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]  # always n of them, whatever n is
    finished: bool
    num_cached_tokens: int  # prompt tokens served by the prefix cache (0 without prefix caching)
    ttft: float | None  # seconds from add_request to the end of the step that sampled the first token
    tpot: float | None  # seconds per output token after the first (over the longest sample)

    @classmethod
    def of(cls, request: Request) -> RequestOutput:
        metrics = request.metrics
        return cls(
            request_id=request.request_id,
            prompt=request.prompt,
            prompt_token_ids=list(request.prompt_token_ids),
            outputs=[_completion(index, seq) for index, seq in enumerate(request.seqs)],
            finished=request.finished,
            num_cached_tokens=request.num_cached_tokens or 0,
            ttft=metrics.ttft,
            tpot=metrics.tpot(max(seq.num_generated for seq in request.seqs)),
        )


def _completion(index: int, seq: Sequence) -> CompletionOutput:
    wants_logprobs = seq.request.params.logprobs is not None
    return CompletionOutput(
        index=index,
        text=seq.text,
        token_ids=seq.generated,
        finish_reason=seq.finish_reason,
        stop_reason=seq.stop_reason,
        logprobs=[dict(entry) for entry in seq.logprobs] if seq.logprobs is not None else None,
        cumulative_logprob=seq.cumulative_logprob if wants_logprobs else None,
    )
