"""Run settings shared by every cache in a comparison: the time model, sampling, limits.

Invariant: a `SimConfig` that exists is valid (checked in `__post_init__`), so the step loop never
re-checks it; every cache in a comparison runs under the same one.

The time model. Requests arrive in seconds (`Request.arrival_time`); the loop runs in *steps* (one
engine iteration each). Step k starts at time ``t_k``; the requests with ``arrival_time <= t_k`` join
the queue at step k, and ``t_{k+1} = t_k + step_time(batch_k, prefill_tokens_k)`` where
``batch_k`` is the number of sequences that generate a token in step k, ``prefill_tokens_k`` the
prompt (and recomputed) tokens computed for the sequences admitted in it, and ``context_tokens_k``
the tokens attention reads in it (the sum of the running sequences' lengths; a shared prefix counts
once per sequence, as each sequence's attention reads it). When nothing runs and
nothing waits, the clock jumps to the next arrival and no step is recorded (idle time is not
simulated step by step). A fixed step time is the default; the batch-dependent terms let a
study model a real GPU, where a step with more sequences, longer contexts or a long prefill takes
longer. Any callable ``(batch, prefill_tokens, context_tokens) -> seconds`` (> 0) can replace
`StepTime`, e.g. a roofline model of a given GPU and model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from pagedkv.errors import InvalidArgument

DEFAULT_STEP_TIME_S = 0.05
SCHEDULERS = ("v1", "v0")

StepTimeModel = Callable[[int, int, int], float]
"""``(batch, prefill_tokens, context_tokens) -> seconds`` of one engine step (see the module docstring)."""


def describe_time_model(model: StepTimeModel) -> str:
    """The model's own one-line description (`StepTime`, rooflines), or its name."""
    describe = getattr(model, "describe", None)
    return (
        str(describe()) if callable(describe) else f"{getattr(model, '__name__', repr(model))} (a callable)"
    )


class SimulationConfigError(InvalidArgument):
    """A simulation that cannot run as configured (impossible sizes, rates, options)."""


@dataclass(frozen=True, slots=True)
class StepTime:
    """Seconds one engine step takes, linear in its work::

        base_s + per_seq_s * batch + per_prefill_token_s * prefill_tokens + per_context_token_s * context

    The default, 50 ms a step whatever the batch, is the order of a decode iteration of a 13B model on
    one A100; with it, the default workload's 10 requests/s arrive faster than any of the caches can
    serve them, which keeps memory full: the regime the comparison is about.
    """

    base_s: float = DEFAULT_STEP_TIME_S
    per_seq_s: float = 0.0
    per_prefill_token_s: float = 0.0
    per_context_token_s: float = 0.0

    def __post_init__(self) -> None:
        if not (self.base_s > 0 and math.isfinite(self.base_s)):
            raise SimulationConfigError(
                f"step time base_s={self.base_s!r} must be a finite number of seconds > 0 "
                "(every engine step takes some time)"
            )
        for name in ("per_seq_s", "per_prefill_token_s", "per_context_token_s"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise SimulationConfigError(f"step time {name}={value!r} must be a finite number >= 0")

    def __call__(self, batch: int, prefill_tokens: int, context_tokens: int) -> float:
        return (
            self.base_s
            + self.per_seq_s * batch
            + self.per_prefill_token_s * prefill_tokens
            + self.per_context_token_s * context_tokens
        )

    def describe(self) -> str:
        parts = [f"{self.base_s * 1e3:g} ms"]
        if self.per_seq_s:
            parts.append(f"{self.per_seq_s * 1e3:g} ms per running sequence")
        if self.per_prefill_token_s:
            parts.append(f"{self.per_prefill_token_s * 1e6:g} us per prefilled token")
        if self.per_context_token_s:
            parts.append(f"{self.per_context_token_s * 1e9:g} ns per context token")
        return " + ".join(parts) + " per engine step"


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How every cache in a comparison runs the requests.

    Args:
        step_time: the step-duration model, a `StepTime` or any `StepTimeModel`.
        n: parallel sampling, outputs per prompt (the samples share the prompt's blocks via `fork`).
        beam_width: beam search width k (beams share blocks; see `beam_prune_prob`). At most one of
            `n` and `beam_width` may exceed 1.
        beam_prune_prob: beam model: in every decode step each beam is, with this probability,
            pruned and replaced by a second continuation of another beam picked uniformly (a `fork`
            of it), so beams share the blocks of their common ancestors, as in real beam search.
        seed: seeds the beam model (one `random.Random` per request, so caches see the same beams).
        max_num_seqs: at most this many sequences run at once (vLLM's max_num_seqs); None: no limit.
        max_num_batched_tokens: the token budget of one step (vLLM's max_num_batched_tokens): decodes
            (one token a running sequence) and prompt tokens computed in the step together stay within
            it. None: no budget, every admitted prompt is prefilled whole in the step it is admitted
            (the seed's model). Needs `max_num_seqs` <= it, as vLLM requires, so decodes always fit.
        scheduler: "v1" (vLLM V1: running requests first, then new ones, in one step) or "v0" (vLLM
            V0's default: a step either prefills newly admitted prompts only, stalling every decode,
            or decodes; prompts are never chunked; a decode needs a free block per sequence).
        enable_chunked_prefill: V1 only: a prompt that does not fit in what is left of the budget is
            prefilled in chunks over several steps (vLLM V1's default). False: it waits for a step with
            room for all of it.
        max_time: stop when the clock reaches this many seconds (unfinished requests are reported).
        check_invariants: verify cache bookkeeping against the block manager every step (slow;
            for tests and debugging).
    """

    step_time: StepTimeModel = field(default_factory=StepTime)
    n: int = 1
    beam_width: int = 1
    beam_prune_prob: float = 0.1
    seed: int = 0
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    scheduler: str = "v1"
    enable_chunked_prefill: bool = True
    max_time: float | None = None
    check_invariants: bool = False

    def __post_init__(self) -> None:
        if not callable(self.step_time):
            raise SimulationConfigError(
                f"step_time={self.step_time!r} must be a StepTime or a callable "
                "(batch, prefill_tokens, context_tokens) -> seconds"
            )
        if self.n < 1 or self.beam_width < 1:
            raise SimulationConfigError(
                f"n={self.n} and beam_width={self.beam_width} must both be >= 1 (1 = one output per prompt)"
            )
        if self.n > 1 and self.beam_width > 1:
            raise SimulationConfigError(
                f"n={self.n} and beam_width={self.beam_width}: "
                "choose parallel sampling or beam search, not both"
            )
        if not 0.0 <= self.beam_prune_prob <= 1.0:
            raise SimulationConfigError(f"beam_prune_prob={self.beam_prune_prob!r} must be in [0, 1]")
        if self.max_num_seqs is not None and self.max_num_seqs < self.num_seqs:
            raise SimulationConfigError(
                f"max_num_seqs={self.max_num_seqs} cannot run even one request of {self.num_seqs} sequences"
            )
        if self.max_time is not None and not self.max_time > 0:
            raise SimulationConfigError(f"max_time={self.max_time!r} must be > 0 seconds (or None)")
        if self.scheduler not in SCHEDULERS:
            raise SimulationConfigError(
                f"scheduler={self.scheduler!r} must be one of {', '.join(SCHEDULERS)}"
            )
        budget = self.max_num_batched_tokens
        if budget is not None:
            if budget < 1:
                raise SimulationConfigError(f"max_num_batched_tokens={budget} must be >= 1 token (or None)")
            if self.max_num_seqs is None or self.max_num_seqs > budget:
                raise SimulationConfigError(
                    f"max_num_batched_tokens={budget} needs max_num_seqs <= {budget} (got "
                    f"{self.max_num_seqs}): every running sequence decodes a token each step, and the "
                    "budget must hold them all (vLLM requires the same)"
                )

    @property
    def num_seqs(self) -> int:
        """Sequences per request: n samples, or k beams, or 1."""
        return max(self.n, self.beam_width)

    @property
    def beam_search(self) -> bool:
        return self.beam_width > 1

    @property
    def chunked_prefill(self) -> bool:
        """Whether prompts may be split over steps: V1 with a token budget and chunking enabled."""
        return (
            self.scheduler == "v1" and self.enable_chunked_prefill and self.max_num_batched_tokens is not None
        )

    def describe_scheduler(self) -> str:
        """One line: the scheduler, its token budget and what it does with prompts."""
        seqs = "no limit" if self.max_num_seqs is None else f"{self.max_num_seqs:,}"
        budget = self.max_num_batched_tokens
        if budget is None:
            return (
                f"vLLM {self.scheduler.upper()} order, max_num_seqs {seqs}, no token budget: every admitted "
                "prompt is prefilled whole in the step that admits it"
            )
        if self.scheduler == "v0":
            how = "separate prefill steps (decodes wait), whole prompts"
        elif self.enable_chunked_prefill:
            how = "decodes first, then prompt chunks fill the rest of the budget (chunked prefill)"
        else:
            how = "decodes first, then whole prompts that fit in the rest of the budget"
        return f"vLLM {self.scheduler.upper()}, max_num_seqs {seqs}, {budget:,} tokens a step: {how}"
