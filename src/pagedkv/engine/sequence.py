"""Requests and the sequences they generate.

A request is one prompt asking for `n` samples; each sample is a `Sequence` with its own id in the
block manager. Invariant kept with the scheduler: while a sequence is running, the block manager
holds exactly `len(seq.tokens)` token slots for it, and the K/V of `seq.tokens[:num_computed]` is in
the paged cache (the last sampled token is the one still to be computed).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from pagedkv.errors import InvalidArgument


@dataclass(frozen=True)
class SamplingParams:
    """Greedy when temperature == 0 (the default); otherwise temperature / top-k / top-p sampling.

    Each sequence draws from its own generator seeded with (seed, request id, sample index), so a
    request's samples do not depend on which requests share its steps or on preemptions, and the
    same prompts added in the same order to a fresh engine sample the same tokens.
    """

    temperature: float = 0.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise InvalidArgument(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise InvalidArgument(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise InvalidArgument(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Request:
    request_id: int
    prompt: list[int]
    max_new_tokens: int
    n: int
    sampling: SamplingParams
    stop_token_ids: frozenset[int]
    seqs: list[Sequence] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return all(seq.status is Status.FINISHED for seq in self.seqs)

    def outputs(self) -> list[list[int]]:
        return [seq.generated for seq in self.seqs]


@dataclass(eq=False)
class Sequence:
    seq_id: int
    request: Request
    index: int  # which of the request's n samples
    tokens: list[int]  # prompt + generated
    status: Status = Status.WAITING
    num_computed: int = 0
    generator: torch.Generator | None = None

    @property
    def generated(self) -> list[int]:
        return self.tokens[len(self.request.prompt) :]

    def append_token(self, token: int) -> bool:
        """Record a sampled token; returns True when the sequence is now finished."""
        self.tokens.append(token)
        return len(self.generated) >= self.request.max_new_tokens or token in self.request.stop_token_ids
