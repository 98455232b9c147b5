"""A request in flight: what the step loop admits, runs, preempts and finishes.

Invariant: the `num_seqs` sequences of a group (one, or n parallel samples, or k beams) always have
the same length, so one number describes the whole group: while it runs, its length at the end of
step ``s`` is ``s + base``. That is what lets the loop advance every running sequence by one token
per step without touching it: lengths are arithmetic, and work happens only at events.
"""

from __future__ import annotations

from dataclasses import dataclass

from pagedkv.simulator.workload import Request


@dataclass(eq=False, slots=True)
class Group:
    """One request and its sequences, with the loop's bookkeeping about it.

    `epoch` changes every time the group stops running (finished or preempted); events queued for
    it carry the epoch they were queued in, so stale events are recognised and skipped.
    """

    request: Request
    num_seqs: int
    arrival_step: int = -1
    first_admit_step: int = -1
    finish_step: int = -1
    finish_time: float = float("nan")
    base: int = 0
    resume_len: int = 0  # tokens held before the step that (re)admits it: the prompt, plus output so far
    preemptions: int = 0
    swapped: bool = False  # preempted by swapping (its KV waits in the CPU pool)
    epoch: int = 0

    def __post_init__(self) -> None:
        self.resume_len = self.request.prompt_len

    @property
    def gid(self) -> int:
        return self.request.request_id

    @property
    def prompt_len(self) -> int:
        return self.request.prompt_len

    @property
    def final_len(self) -> int:
        """Tokens each sequence holds when the request finishes: prompt + output."""
        return self.request.prompt_len + self.request.output_len

    def length(self, step: int) -> int:
        """Tokens each sequence holds at the end of `step` (valid while running)."""
        return step + self.base
