"""The free list: a doubly linked list of block ids threaded through two int arrays.

Invariant: a block id is in the queue exactly when no sequence holds it (its ref_count is 0).
The head is the least recently freed block, the one reused (and, with prefix caching, evicted)
first; freed blocks join at the tail.

Why a linked list and not a deque: a prefix-cache hit revives a *free* block that may sit
anywhere in the queue, so removal must be O(1) (`deque.remove` is O(n)). Why arrays and not one
object per block: `next`/`prev` as C ints cost 8 bytes a block, a Python object with slots over
50, and the pool is allocated once for the whole life of the server.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator


class FreeBlockQueue:
    """FIFO of free block ids with O(1) `popleft_n` (per block), `extend` (per block) and `remove`.

    Slot `num_blocks` of both arrays is a sentinel: `next[sentinel]` is the head and
    `prev[sentinel]` the tail, so an empty queue is the sentinel linked to itself and no
    operation needs a special case for the ends.
    """

    __slots__ = ("_next", "_prev", "_sentinel", "num_free")

    def __init__(self, num_blocks: int) -> None:
        n = num_blocks  # >= 1, checked by the manager
        # next: [num_blocks + 1], prev: [num_blocks + 1]; ids 0..n-1 in order, n is the sentinel.
        self._next = array("i", range(1, n + 2))
        self._prev = array("i", range(-1, n))
        self._next[n] = 0
        self._prev[0] = n
        self._sentinel = n
        self.num_free = n

    def popleft_n(self, count: int) -> list[int]:
        """Remove and return the `count` blocks at the head. The caller checked `count <= num_free`."""
        nxt, prv, s = self._next, self._prev, self._sentinel
        taken = []
        block = nxt[s]
        for _ in range(count):
            taken.append(block)
            block = nxt[block]
        nxt[s] = block
        prv[block] = s
        self.num_free -= count
        return taken

    def extend(self, blocks: Iterable[int]) -> None:
        """Append `blocks` in order; the first one given is the first to be reused."""
        nxt, prv, s = self._next, self._prev, self._sentinel
        tail = prv[s]
        added = 0
        for block in blocks:
            nxt[tail] = block
            prv[block] = tail
            tail = block
            added += 1
        nxt[tail] = s
        prv[s] = tail
        self.num_free += added

    def remove(self, block: int) -> None:
        """Unlink `block`, wherever it is. The caller knows it is in the queue (ref_count 0)."""
        nxt, prv = self._next, self._prev
        before, after = prv[block], nxt[block]
        nxt[before] = after
        prv[after] = before
        self.num_free -= 1

    def __iter__(self) -> Iterator[int]:
        """Free block ids from head (next reused) to tail."""
        nxt, s = self._next, self._sentinel
        block = nxt[s]
        while block != s:
            yield block
            block = nxt[block]
