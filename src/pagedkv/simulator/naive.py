"""The seed's naive contiguous cache: one ``[max_concurrent_seqs, max_seq_len]`` arena.

Every sequence gets a whole row of `max_seq_len` token slots from admission to finish, whatever its
length: the pre-PagedAttention way of serving (as in FasterTransformer). The slots past the
sequence's final length are internal fragmentation; the slots it has not generated yet are
reservation; so token states can never exceed ``mean length / max_seq_len`` of what is held, about
50 % on the default workload.

Invariant: a row is either free or held by exactly one sequence; held slots are ``rows held *
max_seq_len``. Rows never used yet are not listed (`_fresh` counts them off), so an arena of a
hundred million rows costs nothing until they are taken; freed rows are reused last-freed first.
"""

from __future__ import annotations

from pagedkv.simulator.cache import ReservationCache
from pagedkv.simulator.config import SimulationConfigError
from pagedkv.simulator.workload import Request


class NaiveCache(ReservationCache[int]):
    """Rows of `max_seq_len` slots cut from `kv_slots` token slots (the rest of the slots stay unused)."""

    def __init__(self, kv_slots: int, max_seq_len: int, *, name: str = "naive") -> None:
        if max_seq_len < 1:
            raise SimulationConfigError(f"max_seq_len={max_seq_len} must be >= 1 token")
        if kv_slots < max_seq_len:
            raise SimulationConfigError(
                f"kv_slots={kv_slots:,} is smaller than one naive row of max_seq_len={max_seq_len:,} slots; "
                "give the caches more KV slots or lower max_seq_len"
            )
        super().__init__(name, kv_slots)
        self.max_seq_len = max_seq_len
        self.num_rows = kv_slots // max_seq_len
        self._freed_rows: list[int] = []  # rows given back, reused last-freed first
        self._fresh = 0  # rows 0 .. _fresh - 1 have been taken at least once

    def check_fits(self, request: Request, num_seqs: int) -> None:
        if request.total_len > self.max_seq_len:
            raise SimulationConfigError(
                f"request {request.request_id} needs {request.total_len:,} slots "
                f"(prompt {request.prompt_len:,} + output {request.output_len:,}) but a naive row holds "
                f"max_seq_len={self.max_seq_len:,}; "
                "raise max_seq_len or truncate/drop longer requests when loading them"
            )
        if num_seqs > self.num_rows:
            raise SimulationConfigError(
                f"a request of {num_seqs} sequences needs {num_seqs} rows but the naive arena has "
                f"{self.num_rows}; give the caches more KV slots"
            )

    def claimed_slots(self, request: Request) -> int:
        return self.max_seq_len

    def chunk_slots(self, request: Request) -> int:
        return self.max_seq_len

    def _take(self, request: Request) -> int | None:
        if self._freed_rows:
            return self._freed_rows.pop()
        if self._fresh < self.num_rows:
            self._fresh += 1
            return self._fresh - 1
        return None

    def _give_back(self, chunk: int) -> None:
        self._freed_rows.append(chunk)

    def describe(self) -> str:
        unused = self.capacity_slots - self.num_rows * self.max_seq_len
        tail = f" ({unused:,} slots left over)" if unused else ""
        return f"{self.num_rows:,} rows x {self.max_seq_len:,} slots{tail}"
