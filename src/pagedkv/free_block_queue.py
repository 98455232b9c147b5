"""The free list: a doubly linked list of block ids threaded through two int arrays.

Invariant: a block id is in the queue exactly when no sequence holds it (its ref_count is 0).
The head is the next block reused (with prefix caching, evicted) and blocks are taken from it
only. The manager decides which end a freed block joins (vLLM V1's order, see `BlockManager.free`):
a block whose contents a prefix lookup could still find joins the tail, so cached blocks are
evicted least recently freed first; any other block joins the head, since reusing it first costs
no cached contents.

Why a linked list and not a deque: a prefix-cache hit revives a *free* block that may sit
anywhere in the queue, so removal must be O(1) (`deque.remove` is O(n)). Why arrays and not one
object per block: `next`/`prev` as C ints cost 8 bytes a block, a Python object with slots over
50, and the pool is allocated once for the whole life of the server. The arrays are accessed
through memoryviews: storing into a memoryview of C ints is about twice as fast as storing into
the `array` itself, whose item assignment parses its argument with a format string.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator


class FreeBlockQueue:
    """Free block ids, head (next reused) to tail; O(1) per block to take, add at either end, remove.

    Slot `num_blocks` of both arrays is a sentinel: `next[sentinel]` is the head and
    `prev[sentinel]` the tail, so an empty queue is the sentinel linked to itself and no
    operation needs a special case for the ends.
    """

    BYTES_PER_BLOCK = 8
    """`next` and `prev`, one C int each."""

    __slots__ = ("_next", "_prev", "_sentinel", "num_free")

    def __init__(self, num_blocks: int) -> None:
        n = num_blocks  # >= 1, checked by the manager
        # next: [num_blocks + 1], prev: [num_blocks + 1]; ids 0..n-1 in order, n is the sentinel.
        self._next = memoryview(array("i", range(1, n + 2)))
        self._prev = memoryview(array("i", range(-1, n)))
        self._next[n] = 0
        self._prev[0] = n
        self._sentinel = n
        self.num_free = n

    def __getstate__(self) -> tuple[array, array, int, int]:
        """For `copy.deepcopy` and pickle: the arrays themselves (a memoryview cannot be copied)."""
        return self._next.obj, self._prev.obj, self._sentinel, self.num_free  # type: ignore[return-value]

    def __setstate__(self, state: tuple[array, array, int, int]) -> None:
        nxt, prv, self._sentinel, self.num_free = state
        self._next, self._prev = memoryview(nxt), memoryview(prv)

    def popleft(self) -> int:
        """Remove and return the head. The caller checked `num_free > 0`."""
        nxt, s = self._next, self._sentinel
        block = nxt[s]
        after = nxt[block]
        nxt[s] = after
        self._prev[after] = s
        self.num_free -= 1
        return block

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

    def extend(self, blocks: list[int]) -> None:
        """Add `blocks` at the tail, in order: the first one given is reused first of them."""
        nxt, prv, s = self._next, self._prev, self._sentinel
        tail = prv[s]
        for block in blocks:
            nxt[tail] = block
            prv[block] = tail
            tail = block
        nxt[tail] = s
        prv[s] = tail
        self.num_free += len(blocks)

    def prepend(self, blocks: list[int]) -> None:
        """Add `blocks` at the head, in order: the first one given becomes the head (vLLM's `prepend_n`)."""
        nxt, prv, s = self._next, self._prev, self._sentinel
        head = nxt[s]
        last = s
        for block in blocks:
            nxt[last] = block
            prv[block] = last
            last = block
        nxt[last] = head
        prv[head] = last
        self.num_free += len(blocks)

    def remove_all(self, blocks: list[int]) -> None:
        """Unlink each of `blocks`, wherever it is. The caller knows they are in the queue (ref_count 0)."""
        nxt, prv = self._next, self._prev
        for block in blocks:
            before, after = prv[block], nxt[block]
            nxt[before] = after
            prv[after] = before
        self.num_free -= len(blocks)

    def __iter__(self) -> Iterator[int]:
        """Free block ids from head (next reused) to tail."""
        nxt, s = self._next, self._sentinel
        block = nxt[s]
        while block != s:
            yield block
            block = nxt[block]
