"""The paper's Orca baselines: one contiguous chunk per sequence, sized by an output-length estimate.

A sequence reserves ``min(prompt + estimate, max_seq_len)`` token slots at admission, where the
estimate is `max_seq_len` (Max: nothing is known), the next power of two of the true output
(Pow2: a 2x overestimate at worst) or the true output (Oracle: perfect knowledge). The reservation
is rounded up to `block_size`-token blocks and placed by a buddy allocator, which rounds it again to
a power of two of blocks; those rounding slots (`padding_slots`) and the holes between chunks are
external fragmentation, while ``reservation - (prompt + output)`` is internal fragmentation. Orca
admits FCFS, stops at the first request that does not fit, and never preempts.

Invariant: every admitted sequence holds exactly one buddy block; the buddy allocator's allocated
units equal the held slots / `block_size`.
"""

from __future__ import annotations

from pagedkv.simulator.buddy import BuddyAllocator
from pagedkv.simulator.cache import ReservationCache
from pagedkv.simulator.config import SimulationConfigError
from pagedkv.simulator.workload import Request

ORCA_POLICIES = ("max", "pow2", "oracle")


def next_power_of_two(value: int) -> int:
    return 1 << max(value - 1, 0).bit_length()


class OrcaCache(ReservationCache[int]):
    """Orca (Max / Pow2 / Oracle) over `kv_slots` slots cut into `block_size`-token buddy units."""

    def __init__(
        self,
        kv_slots: int,
        max_seq_len: int,
        policy: str = "oracle",
        *,
        block_size: int = 16,
        name: str | None = None,
    ) -> None:
        if policy not in ORCA_POLICIES:
            raise SimulationConfigError(f"Orca policy {policy!r} is not one of {', '.join(ORCA_POLICIES)}")
        if max_seq_len < 1 or block_size < 1:
            raise SimulationConfigError(
                f"max_seq_len={max_seq_len} and block_size={block_size} must both be >= 1"
            )
        if kv_slots < block_size:
            raise SimulationConfigError(
                f"kv_slots={kv_slots:,} is smaller than one Orca block of {block_size} slots"
            )
        super().__init__(name or f"orca-{policy}", kv_slots)
        self.policy = policy
        self.max_seq_len = max_seq_len
        self.block_size = block_size
        self.buddy = BuddyAllocator(kv_slots // block_size)
        self._fits: dict[tuple[int, int], bool] = {}

    def claimed_slots(self, request: Request) -> int:
        estimate = {
            "max": self.max_seq_len,
            "pow2": next_power_of_two(request.output_len),
            "oracle": request.output_len,
        }[self.policy]
        return min(request.prompt_len + estimate, self.max_seq_len)

    def chunk_slots(self, request: Request) -> int:
        return (1 << self._order(request)) * self.block_size

    def _order(self, request: Request) -> int:
        return BuddyAllocator.order_for(-(-self.claimed_slots(request) // self.block_size))

    def check_fits(self, request: Request, num_seqs: int) -> None:
        if request.total_len > self.max_seq_len:
            raise SimulationConfigError(
                f"request {request.request_id} needs {request.total_len:,} slots but Orca reserves at most "
                f"max_seq_len={self.max_seq_len:,}; raise max_seq_len or truncate/drop longer requests"
            )
        order = self._order(request)
        if not self._fits_empty(order, num_seqs):
            raise SimulationConfigError(
                f"request {request.request_id}: {num_seqs} chunk(s) of "
                f"{(1 << order) * self.block_size:,} slots "
                f"(a buddy block of 2^{order} x {self.block_size}-token blocks) do not fit in "
                f"{self.capacity_slots:,} KV slots; give the caches more KV slots"
            )

    def _fits_empty(self, order: int, count: int) -> bool:
        """Whether `count` chunks of `2**order` blocks fit in the empty space (memoized: few distinct)."""
        key = (order, count)
        if key not in self._fits:
            probe = BuddyAllocator(self.buddy.num_units)
            self._fits[key] = all(probe.allocate(order) is not None for _ in range(count))
        return self._fits[key]

    def _take(self, request: Request) -> int | None:
        return self.buddy.allocate(self._order(request))

    def _give_back(self, chunk: int) -> None:
        self.buddy.free(chunk)

    def describe(self) -> str:
        unused = self.capacity_slots - self.buddy.num_units * self.block_size
        tail = f" ({unused:,} slots left over)" if unused else ""
        return f"buddy over {self.buddy.num_units:,} blocks x {self.block_size} slots{tail}"
