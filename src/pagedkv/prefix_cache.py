"""Prefix caching: full blocks addressed by a chained hash of their contents, hashed lazily.

A full block's hash chains its parent's: ``h_i = sha256(h_{i-1} || token ids of block i)``, with
``h_{-1} = b""`` and the ids as little-endian int64. Equal hashes therefore mean equal *prefixes*,
not just equal blocks, which is what makes a block's KV reusable (keys and values depend on every
earlier token). sha256 is vLLM's default for the same reason we use it: a collision would silently
serve another prompt's KV, so a 256-bit cryptographic hash is worth its ~0.5 µs; Python's `hash()`
is 64 bits and salted per process.

Laziness ("hash only what a lookup can use"): hashing every block the moment it fills costs
about 1 µs a block and most blocks are never looked up. A lookup walks the chain from the
root and only ever asks "which block has hash ``h_i``?" after it matched ``h_{i-1}``. So a
sequence only has to publish blocks up to the first one nobody has asked about yet: every
sequence keeps a *continuation* ``(seq, frontier)`` filed under ``frontier_hash`` (the hash of
its last published block), and a lookup that reaches hash ``h`` first hashes and publishes the
next block of every continuation filed under ``h``. Each block is hashed at most once, and only
when a lookup could match it. Allocation publishes the block where its own lookup missed (the
hash was computed anyway), so unrelated prompts cost one hash each.

Remembered lookups: a request that does not fit is asked about again at every scheduler step
(``can_allocate``, then ``allocate`` once it fits). A prompt's hashes depend on its tokens only,
never on what the cache holds, so the last few prompts looked up keep theirs (`Lookup`); asking
again re-walks the index with them, which costs a dict lookup a block instead of a sha256, and
stays exact however the cache changed in between (the walk, not the hashes, decides the hit).
A lookup also keeps its last result and the cache's `generation` then; `generation` moves with
everything a walk reads (the index, the continuations filed, a block filling at a continuation's
frontier), so an unchanged generation means the walk would find exactly the same, and is skipped.

Invariants:
- ``hash_to_block[h] == b`` implies ``block_hash[b] == h`` and block ``b`` holds the prefix
  whose chained hash is ``h`` (checked against the publishing sequence's token ids).
- a sequence's blocks ``0 .. frontier-1`` are published (have a ``block_hash``).
- a freed block keeps its contents, and stays findable, until it is popped for new contents
  (`on_reuse`), which drops its hash.

Token ids are hashed as little-endian int64, and only when a lookup reaches their block (checking
every id up front would cost more than the rest of an allocation). A lookup whose own block holds
anything else raises `InvalidArgument` naming it, before anything changes; a sequence block holding
such an id is never published, and the sequence stops recording there, so no later call fails
because of it.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable
from collections.abc import Sequence as SequenceABC
from hashlib import sha256
from typing import NamedTuple

from pagedkv.errors import InvalidArgument, InvariantViolation
from pagedkv.sequence import Sequence

ROOT = b""
RECENT_LOOKUPS = 4
"""Prompts whose block hashes are remembered (a scheduler retries the head of its queue)."""
BLOCK_ERRORS = (struct.error, TypeError)
"""What packing a block raises for an id that is not an int64."""


def bad_token_id(token_ids: SequenceABC[object], offset: int) -> InvalidArgument:
    """The error for the first id of `token_ids` that is not an int64 (`offset`: its block's position)."""
    for position, token in enumerate(token_ids, offset):
        if not (isinstance(token, int) and -(2**63) <= token < 2**63):
            return InvalidArgument(
                f"token id {token!r} at position {position} is not an int64; "
                "pass integer token ids in [-2**63, 2**63)"
            )
    return InvalidArgument(f"token ids at position {offset} cannot be hashed: {list(token_ids)!r}")


def hash_block(parent_hash: bytes, packed: bytes) -> bytes:
    """Chained content hash of one full block, from its ids packed as int64 (see the module docstring)."""
    return sha256(parent_hash + packed).digest()


class Lookup:
    """A prompt and the chained hashes of its first full blocks, kept across lookups of it."""

    __slots__ = ("digests", "generation", "match", "token_ids")

    def __init__(self, token_ids: list[int]) -> None:
        self.token_ids = token_ids
        """A private copy of the prompt; a sequence allocated with it takes it over."""
        self.digests: list[bytes] = []
        """``digests[i]``: chained hash of block ``i``, for as many blocks as a lookup has reached."""
        self.match: PrefixMatch | None = None
        """The last walk's result, valid while the cache's generation is still `generation`."""
        self.generation = -1


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

    BYTES_PER_BLOCK = 9
    """`popped_at` (8) and `block_is_cached` (1); hashes cost only for blocks a lookup reached."""

    __slots__ = (
        "_duplicates",
        "_pack_block",
        "_pending",
        "_popped_at",
        "_recent",
        "_source",
        "block_hash",
        "block_is_cached",
        "block_size",
        "clock",
        "generation",
        "hash_to_block",
        "hashed_blocks",
    )

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self._pack_block = struct.Struct(f"<{block_size}q").pack
        self.hashed_blocks = 0
        """sha256 block hashes computed (lookups and publication; a stat, see `Stats`)."""
        self.generation = 0
        """Moves whenever a lookup's walk could find something else (see the module docstring)."""
        self._recent: list[Lookup] = []  # remembered lookups, most recently used last
        self.hash_to_block: dict[bytes, int] = {}
        self.block_hash: dict[int, bytes] = {}
        # Other blocks with the same contents as hash_to_block[h] (sequences that generated the
        # same tokens independently); one takes over when the mapped block is reused.
        self._duplicates: dict[bytes, list[int]] = {}
        # Which sequence published a block, and at which logical index (for check()).
        self._source: dict[int, tuple[Sequence, int]] = {}
        # Continuations waiting for a lookup to reach their frontier hash.
        self._pending: dict[bytes, list[tuple[Sequence, int]]] = {}
        # clock: +1 at every free; popped_at[b]: the clock when b was last popped while cached.
        self.clock = 0
        self._popped_at = memoryview(array("q", [-1]) * num_blocks)  # see FreeBlockQueue: faster stores
        # 1 for every full block with known contents, hashed yet or not: what a lookup can find.
        self.block_is_cached = bytearray(num_blocks)

    def __getstate__(self) -> dict[str, object]:
        """For `copy.deepcopy` and pickle: `popped_at` as its array (a memoryview cannot be copied), and
        no `_pack_block` (a bound method of a `struct.Struct`; rebuilt from `block_size`)."""
        state = {name: getattr(self, name) for name in self.__slots__ if name != "_pack_block"}
        state["_popped_at"] = self._popped_at.obj
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        self._popped_at = memoryview(self._popped_at)
        self._pack_block = struct.Struct(f"<{self.block_size}q").pack

    def lookup(self, token_ids: SequenceABC[int]) -> Lookup:
        """This prompt's remembered hashes, or a new record of it (with a private copy of its ids)."""
        ids = token_ids if type(token_ids) is list else list(token_ids)
        recent = self._recent
        for i, known in enumerate(recent):
            if known.token_ids == ids:
                recent.append(recent.pop(i))
                return known
        new = Lookup(list(ids) if ids is token_ids else ids)
        recent.append(new)
        if len(recent) > RECENT_LOOKUPS:
            del recent[0]
        return new

    def forget(self, lookup: Lookup) -> None:
        """The prompt was allocated: its sequence owns `lookup.token_ids` from now on."""
        self._recent = [known for known in self._recent if known is not lookup]

    def match(self, lookup: Lookup) -> PrefixMatch:
        """Longest prefix of full blocks of the prompt present in the cache."""
        if lookup.generation == self.generation and lookup.match is not None:
            return lookup.match
        result = self._walk(lookup)
        lookup.match, lookup.generation = result, self.generation
        return result

    def _walk(self, lookup: Lookup) -> PrefixMatch:
        size, pack = self.block_size, self._pack_block
        token_ids, digests = lookup.token_ids, lookup.digests
        pending, index = self._pending, self.hash_to_block
        parent = ROOT
        blocks: list[int] = []
        for i in range(len(token_ids) // size):
            if i < len(digests):
                digest = digests[i]
            else:
                own = token_ids[i * size : (i + 1) * size]
                try:
                    digest = hash_block(parent, pack(*own))
                except BLOCK_ERRORS:
                    raise bad_token_id(own, i * size) from None
                digests.append(digest)
                self.hashed_blocks += 1
            if parent in pending:
                self._publish_pending(parent, digest, token_ids[i * size : (i + 1) * size])
            block = index.get(digest)
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

    def on_filled(self, seq: Sequence, first: int, end: int) -> None:
        """Blocks `first .. end-1` of `seq` just became full of known tokens: cached from now on (unhashed).

        Filling the block at its frontier lets a waiting continuation publish it: a new generation.
        """
        is_cached = self.block_is_cached
        for block in seq.block_table[first:end]:
            is_cached[block] = 1
        if first <= seq.frontier < end:
            self.generation += 1

    def on_free(self, seq: Sequence) -> None:
        """Mark `seq` dead: from now on its blocks may be reused, which `popped_at` records."""
        self.clock += 1
        seq.died_at = self.clock

    def on_reuse(self, blocks: Iterable[int]) -> int:
        """Blocks popped for new contents leave the cache; returns how many were cached (evictions).

        Only a cached block's pop is recorded in `popped_at`: a dead sequence can rely on block
        ``b`` only if ``b`` was cached when it died, and ``b`` stays cached until its next pop.
        """
        evicted = 0
        clock, popped_at, block_hash, is_cached = (
            self.clock,
            self._popped_at,
            self.block_hash,
            self.block_is_cached,
        )
        for block in blocks:
            if not is_cached[block]:
                continue
            evicted += 1
            is_cached[block] = 0
            popped_at[block] = clock
            digest = block_hash.pop(block, None)
            if digest is not None:
                del self._source[block]
                self._unmap(block, digest)
        return evicted

    def _unmap(self, block: int, digest: bytes) -> None:
        """Drop `block` from the index; a duplicate holding the same contents takes its place."""
        self.generation += 1
        duplicates = self._duplicates.get(digest, [])
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
        self.generation += 1
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
            digest = hash_block(digest, self._pack_block(*token_ids[start : start + self.block_size]))
        return digest

    def _publish(self, block: int, digest: bytes, seq: Sequence, index: int) -> None:
        if block in self.block_hash:
            return  # a block shared by a fork, already published through the other sequence
        self.generation += 1
        self.block_hash[block] = digest
        self._source[block] = (seq, index)
        if self.hash_to_block.setdefault(digest, block) != block:
            self._duplicates.setdefault(digest, []).append(block)

    def _file(self, seq: Sequence) -> None:
        self.generation += 1
        waiting = self._pending.setdefault(seq.frontier_hash, [])
        waiting.append((seq, seq.frontier))
        if len(waiting) >= 16 and len(waiting) & (len(waiting) - 1) == 0:
            self._prune(waiting)

    def _prune(self, waiting: list[tuple[Sequence, int]]) -> None:
        """Drop continuations that can never publish again (superseded, or dead with their next block
        not full or reused), so a hash that no lookup walks past does not collect dead sequences.
        Called when a list reaches a power of two, so the cost is O(1) a filing, amortized.
        """
        waiting[:] = [
            (seq, index)
            for seq, index in waiting
            if seq.frontier == index and (seq.died_at is None or self._holds_contents(seq, index))
        ]

    def _publish_pending(self, parent: bytes, digest: bytes, tokens: list[int]) -> None:
        """A lookup reached `parent`: publish the next block of every continuation filed there.

        `digest` is the lookup's own next block hash and `tokens` that block's ids: a continuation
        whose next block holds the same ids (same parent, same ids) has that hash, no sha256 needed.
        """
        for seq, index in self._pending.pop(parent):
            if seq.frontier != index:
                continue  # superseded: the sequence was advanced by a fork
            if self._hash_next(seq, digest, tokens):
                self._file(seq)
            elif seq.died_at is None and seq.recording:
                self._file(seq)  # its next block is not full yet; wait here

    def _hash_next(self, seq: Sequence, digest: bytes | None = None, tokens: list[int] | None = None) -> bool:
        """Publish block `seq.frontier` if it is full and still holds its contents.

        Its hash is `digest` when its ids equal `tokens` (a lookup's block with the same parent).
        """
        index = seq.frontier
        if not self._holds_contents(seq, index):
            return False
        size = self.block_size
        own = seq.token_ids[index * size : (index + 1) * size]
        if digest is None or own != tokens:
            try:
                digest = hash_block(seq.frontier_hash, self._pack_block(*own))
            except BLOCK_ERRORS:
                seq.recording = False  # an id that is not an int64: nothing from here on is cached
                return False
            self.hashed_blocks += 1
        self._publish(seq.block_table[index], digest, seq, index)
        seq.frontier, seq.frontier_hash = index + 1, digest
        return True

    def _holds_contents(self, seq: Sequence, index: int) -> bool:
        """Block `index` of `seq` is full of known tokens and was not reused since `seq` died."""
        if len(seq.token_ids) < (index + 1) * self.block_size or index >= len(seq.block_table):
            return False
        return seq.died_at is None or self._popped_at[seq.block_table[index]] < seq.died_at
