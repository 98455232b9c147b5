"""Binary buddy allocator over a contiguous space of units (the Orca baselines' placement).

Orca-style systems reserve one contiguous chunk per request. How those chunks are placed decides
how much memory is lost *between* them (external fragmentation), so the simulator places them for
real instead of assuming a number: a chunk of `2**order` units is carved out of the smallest free
block that holds it, splitting blocks in halves ("buddies"), and a freed block merges with its
buddy whenever the buddy is free too.

The space need not be a power of two: it is cut into aligned power-of-two *regions*, largest first
(981 units = 512 + 256 + 128 + 64 + 16 + 4 + 1), and blocks never merge across regions.

Invariant: every unit lies in exactly one block, free or allocated; a free block never has a free
buddy of the same order in its region (those are always merged); free blocks of each order are
listed in `_free[order]`.
"""

from __future__ import annotations

from pagedkv.errors import InvalidArgument


class BuddyAllocator:
    """Allocate power-of-two chunks of `num_units` units; lowest address first among equals."""

    def __init__(self, num_units: int) -> None:
        if num_units < 1:
            raise InvalidArgument(f"a buddy allocator needs num_units >= 1, got {num_units}")
        self.num_units = num_units
        self.max_order = num_units.bit_length() - 1
        self._free: list[set[int]] = [set() for _ in range(self.max_order + 1)]
        self._region_order: dict[int, int] = {}  # region start -> its order
        self._allocated: dict[int, int] = {}  # block start -> order
        start = 0
        for order in range(self.max_order, -1, -1):
            if num_units >> order & 1:
                self._region_order[start] = order
                self._free[order].add(start)
                start += 1 << order
        self._region_starts = sorted(self._region_order)

    @staticmethod
    def order_for(units: int) -> int:
        """Smallest order whose block holds `units` units (requests round up to a power of two)."""
        return max(units - 1, 0).bit_length()

    def allocate(self, order: int) -> int | None:
        """Start unit of a new block of `2**order` units, or None when no free block is big enough."""
        source = next((o for o in range(order, self.max_order + 1) if self._free[o]), None)
        if source is None:
            return None
        start = min(self._free[source])
        self._free[source].remove(start)
        while source > order:  # split, keeping the low half and freeing the high buddy
            source -= 1
            self._free[source].add(start + (1 << source))
        self._allocated[start] = order
        return start

    def free(self, start: int) -> None:
        order = self._allocated.pop(start, None)
        if order is None:
            raise InvalidArgument(f"buddy free({start}): no allocated block starts at unit {start}")
        region_order = self._region_order[self._region_of(start)]
        while order < region_order:
            buddy = start ^ (1 << order)
            if buddy not in self._free[order]:
                break
            self._free[order].remove(buddy)
            start = min(start, buddy)
            order += 1
        self._free[order].add(start)

    @property
    def free_units(self) -> int:
        return sum(len(blocks) << order for order, blocks in enumerate(self._free))

    def _region_of(self, unit: int) -> int:
        region = self._region_starts[0]
        for start in self._region_starts:
            if start > unit:
                break
            region = start
        return region
