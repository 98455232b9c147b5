"""Prefix caching: full blocks addressed by a chained hash of their contents, hashed lazily.

A full block's hash chains its parent's: ``h_i = sha256(h_{i-1} || token ids of block i)``, with
``h_{-1} = b""``. Equal hashes therefore mean equal *prefixes*, not just equal blocks, which
is what makes a block's KV reusable (keys and values depend on every earlier token). sha256
is vLLM's default for the same reason we use it: a collision would silently serve another
prompt's KV, so a 256-bit cryptographic hash is worth its ~0.5 µs; Python's `hash()` is 64
bits and salted per process.

Laziness ("hash only what a lookup can use"): hashing every block the moment it fills costs
about 1 µs a block and most blocks are never looked up. A lookup walks the chain from the
root and only ever asks "which block has hash ``h_i``?" after it matched ``h_{i-1}``. So a
sequence only has to publish blocks up to the first one nobody has asked about yet: every
sequence keeps a *continuation* ``(seq, frontier)`` filed under ``frontier_hash`` (the hash of
its last published block), and a lookup that reaches hash ``h`` first hashes and publishes the
next block of every continuation filed under ``h``. Each block is hashed at most once, and only
when a lookup could match it. Allocation publishes the block where its own lookup missed (the
hash was computed anyway), so unrelated prompts cost one hash each.

Invariants:
- ``hash_to_block[h] == b`` implies ``block_hash[b] == h`` and block ``b`` holds the prefix
  whose chained hash is ``h`` (checked against the publishing sequence's token ids).
- a sequence's blocks ``0 .. frontier-1`` are published (have a ``block_hash``).
- a freed block keeps its contents, and stays findable, until it is popped for new contents
  (`on_reuse`), which drops its hash.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from hashlib import sha256
from typing import NamedTuple

from pagedkv.errors import InvariantViolation
from pagedkv.sequence import Sequence

ROOT = b""


def hash_block(parent_hash: bytes, token_ids: list[int]) -> bytes:
    """Chained content hash of one full block (see the module docstring for why sha256)."""
    return sha256(parent_hash + array("q", token_ids).tobytes()).digest()


class PrefixMatch(NamedTuple):
    """The longest cached prefix of a prompt, in full blocks."""

    blocks: list[int]
    """Physical blocks holding the cached prefix, logical order."""
    last_hash: bytes
    """Chained hash of the last matched block (`ROOT` when none matched)."""
    miss_hash: bytes | None
    """Hash of the first full block that missed, or None when every full block matched."""


class PrefixCache:
    """hash -> block map with lazy publication; owned and driven by `BlockManager`."""

    __slots__ = (
        "_duplicates",
        "_pending",
        "_popped_at",
        "_source",
        "block_hash",
        "block_is_cached",
        "block_size",
        "clock",
        "hash_to_block",
    )

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.hash_to_block: dict[bytes, int] = {}
        self.block_hash: dict[int, bytes] = {}
        # Other blocks with the same contents as hash_to_block[h] (sequences that generated the
        # same tokens independently); one takes over when the mapped block is reused.
        self._duplicates: dict[bytes, list[int]] = {}
        # Which sequence published a block, and at which logical index (for check()).
        self._source: dict[int, tuple[Sequence, int]] = {}
        # Continuations waiting for a lookup to reach their frontier hash.
        self._pending: dict[bytes, list[tuple[Sequence, int]]] = {}
        # clock: +1 at every free; popped_at[b]: the clock when b was last popped for new contents.
        self.clock = 0
        self._popped_at = array("q", [-1]) * num_blocks
        # 1 for every full block with known contents, hashed yet or not: what a lookup can find.
        self.block_is_cached = bytearray(num_blocks)

    def match(self, token_ids: list[int]) -> PrefixMatch:
        """Longest prefix of full blocks of `token_ids` present in the cache."""
        size = self.block_size
        parent = ROOT
        blocks: list[int] = []
        for start in range(0, len(token_ids) - size + 1, size):
            if parent in self._pending:
                self._publish_pending(parent)
            digest = hash_block(parent, token_ids[start : start + size])
            block = self.hash_to_block.get(digest)
            if block is None:
                return PrefixMatch(blocks, parent, digest)
            blocks.append(block)
            parent = digest
        return PrefixMatch(blocks, parent, None)

    def start(self, seq: Sequence, match: PrefixMatch) -> None:
        """Track a newly allocated sequence whose first blocks are `match.blocks`."""
        hits = len(match.blocks)
        if match.miss_hash is None:
            seq.frontier, seq.frontier_hash = hits, match.last_hash
        else:
            self._publish(seq.block_table[hits], match.miss_hash, seq, hits)
            seq.frontier, seq.frontier_hash = hits + 1, match.miss_hash
        self._file(seq)

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Publish the parent's full blocks, which the child shares, so both chains can continue.

        The child's own blocks start at the first block that is not full at the fork; it files
        its continuation under the hash of the last shared full block.
        """
        shared_full = min(parent.num_tokens, len(parent.token_ids)) // self.block_size
        if parent.frontier < shared_full:
            while parent.frontier < shared_full and self._hash_next(parent):
                pass
            self._file(parent)
        child.frontier, child.frontier_hash = parent.frontier, parent.frontier_hash
        self._file(child)

    def on_filled(self, blocks: Iterable[int]) -> None:
        """These blocks just became full of known tokens: they are cached from now on (unhashed)."""
        is_cached = self.block_is_cached
        for block in blocks:
            is_cached[block] = 1

    def on_free(self, seq: Sequence) -> None:
        """Mark `seq` dead: from now on its blocks may be reused, which `popped_at` records."""
        self.clock += 1
        seq.died_at = self.clock

    def on_reuse(self, blocks: list[int]) -> int:
        """Blocks popped for new contents leave the cache; returns how many were cached (evictions)."""
        evicted = 0
        clock, popped_at, block_hash, is_cached = (
            self.clock,
            self._popped_at,
            self.block_hash,
            self.block_is_cached,
        )
        for block in blocks:
            popped_at[block] = clock
            evicted += is_cached[block]
            is_cached[block] = 0
            digest = block_hash.pop(block, None)
            if digest is not None:
                del self._source[block]
                self._unmap(block, digest)
        return evicted

    def _unmap(self, block: int, digest: bytes) -> None:
        """Drop `block` from the index; a duplicate holding the same contents takes its place."""
        duplicates = self._duplicates.get(digest)
        if self.hash_to_block[digest] != block:
            duplicates.remove(block)
        elif duplicates:
            self.hash_to_block[digest] = duplicates.pop()
        else:
            del self.hash_to_block[digest]
            return
        if not duplicates:
            del self._duplicates[digest]

    def reset(self) -> None:
        """Forget every hash. The caller ensures no sequence is alive."""
        self.hash_to_block.clear()
        self.block_hash.clear()
        self._duplicates.clear()
        self._source.clear()
        self._pending.clear()
        self.block_is_cached[:] = bytes(len(self.block_is_cached))

    def check(self, live: Iterable[Sequence]) -> None:
        """Raise `InvariantViolation` if a published hash does not match its block's contents."""
        indexed = [(digest, block) for digest, blocks in self._duplicates.items() for block in blocks]
        for digest, block in [*self.hash_to_block.items(), *indexed]:
            if self.block_hash.get(block) != digest:
                raise InvariantViolation(f"hash_to_block points at block {block} whose hash differs")
        if len(indexed) + len(self.hash_to_block) != len(self.block_hash):
            raise InvariantViolation("a hashed block is missing from the index, or indexed twice")
        for block, digest in self.block_hash.items():
            seq, index = self._source[block]
            if not self._holds_contents(seq, index) or seq.block_table[index] != block:
                raise InvariantViolation(f"block {block} is cached but its contents were overwritten")
            if self._chain_hash(seq.token_ids, index) != digest:
                raise InvariantViolation(f"block {block}: cached hash does not match its token ids")
            if not self.block_is_cached[block]:
                raise InvariantViolation(f"block {block} has a hash but is not marked cached")
        for seq in live:
            for index in range(seq.frontier):
                if seq.block_table[index] not in self.block_hash:
                    raise InvariantViolation(f"block {seq.block_table[index]} is behind a frontier unhashed")

    def _chain_hash(self, token_ids: list[int], index: int) -> bytes:
        digest = ROOT
        for start in range(0, (index + 1) * self.block_size, self.block_size):
            digest = hash_block(digest, token_ids[start : start + self.block_size])
        return digest

    def _publish(self, block: int, digest: bytes, seq: Sequence, index: int) -> None:
        if block in self.block_hash:
            return  # a block shared by a fork, already published through the other sequence
        self.block_hash[block] = digest
        self._source[block] = (seq, index)
        if self.hash_to_block.setdefault(digest, block) != block:
            self._duplicates.setdefault(digest, []).append(block)

    def _file(self, seq: Sequence) -> None:
        self._pending.setdefault(seq.frontier_hash, []).append((seq, seq.frontier))

    def _publish_pending(self, parent: bytes) -> None:
        """A lookup reached `parent`: publish the next block of every continuation filed there."""
        for seq, index in self._pending.pop(parent):
            if seq.frontier != index:
                continue  # superseded: the sequence was advanced by a fork
            if self._hash_next(seq):
                self._file(seq)
            elif seq.died_at is None and seq.recording:
                self._file(seq)  # its next block is not full yet; wait here

    def _hash_next(self, seq: Sequence) -> bool:
        """Publish block `seq.frontier` if it is full and still holds its contents."""
        index = seq.frontier
        if not self._holds_contents(seq, index):
            return False
        size = self.block_size
        digest = hash_block(seq.frontier_hash, seq.token_ids[index * size : (index + 1) * size])
        self._publish(seq.block_table[index], digest, seq, index)
        seq.frontier, seq.frontier_hash = index + 1, digest
        return True

    def _holds_contents(self, seq: Sequence, index: int) -> bool:
        """Block `index` of `seq` is full of known tokens and was not reused since `seq` died."""
        if len(seq.token_ids) < (index + 1) * self.block_size or index >= len(seq.block_table):
            return False
        return seq.died_at is None or self._popped_at[seq.block_table[index]] < seq.died_at
