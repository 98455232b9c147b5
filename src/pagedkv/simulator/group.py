"""A request in flight: what the step loop admits, prefills, runs, preempts and finishes.

Invariant: the `num_seqs` sequences of a group (one, or n parallel samples, or k beams) always have
the same length, so one number describes the whole group. While it decodes, its length at the end of
decode tick ``t`` is ``t + base``: every decode step adds one token to every decoding sequence, which
lets the loop advance all of them without touching any; work happens only at events. While its prompt
is prefilled in chunks (chunked prefill), `computed` counts the tokens whose KV is already written.

Ownership: the loop creates a group when its request arrives, writes every field, and drops it when
the request finishes. Caches read `request`, `num_seqs`, `epoch` and `length()`; they never write.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pagedkv.simulator.workload import Request


@dataclass(eq=False, slots=True)
class Group:
    """One request and its sequences, with the loop's bookkeeping about it.

    `epoch` changes every time the group stops running (finished or preempted); events a cache queued
    for it carry the epoch they were queued in, so stale events are recognised and skipped.
    """

    request: Request
    index: int  # position in the request list: where the run's per-request results are stored
    num_seqs: int
    resume_len: int = field(init=False)  # tokens to (re)compute before decoding: prompt (+ output so far)
    gid: int = field(init=False)  # the request's id (fields, not properties: read at every event)
    prompt_len: int = field(init=False)
    final_len: int = field(init=False)  # tokens each sequence holds when the request finishes
    computed: int = 0  # while prefilling: tokens of `resume_len` already computed (cache hits included)
    base: int = 0  # while decoding: length at the end of decode tick t is t + base
    finish_tick: int = -1  # the decode tick in which it generates its last token
    swapped: bool = False  # preempted by swapping: its KV waits in the CPU pool
    preemptions: int = 0
    epoch: int = 0

    def __post_init__(self) -> None:
        request = self.request
        self.gid = request.request_id
        self.prompt_len = self.resume_len = request.prompt_len
        self.final_len = request.prompt_len + request.output_len

    def length(self, tick: int) -> int:
        """Tokens each sequence holds at the end of decode tick `tick` (valid while decoding)."""
        return tick + self.base
