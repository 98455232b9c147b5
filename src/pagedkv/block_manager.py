"""The block manager of PagedAttention (Kwon et al., SOSP 2023, §4.2-4.4).

KV memory is a fixed pool of `num_blocks` blocks of `block_size` token slots. Each sequence owns
a *block table* mapping its logical blocks to physical ones: token `t` lives in physical block
``block_table[t // block_size]`` at offset ``t % block_size``. Blocks are allocated on demand,
only when a sequence crosses a block boundary, so at most ``block_size - 1`` slots per sequence
are ever wasted. `fork` shares every block (reference counts, no copy); the first write into a
shared, partially filled block copies it (copy-on-write). With prefix caching, full blocks are
found again by the hash of their contents (see `prefix_cache`).

Invariants (verified by `check_invariants`):
- every block is either on the free list (ref_count 0) or held (ref_count > 0), never both;
- a block's ref_count equals the number of block-table entries that point at it;
- ``len(block_table) == ceil(num_tokens / block_size)`` for every sequence.

Every mutating method checks capacity *before* it changes anything, so `OutOfBlocks` (and
every other error) leaves the manager exactly as it was: no rollback code exists.

Free order (vLLM V1's `BlockPool.free_blocks`): a sequence releases its blocks last block first. A
released block whose contents a prefix lookup could still find (a full block of known token ids)
joins the free-list tail, so cached blocks are evicted least recently freed first and a sequence's
last blocks before its first ones, which other prompts are likelier to share. Every other released
block (a partly filled last block, contents given as a bare count, or prefix caching off) joins
the head and is reused first: reusing it loses no cached contents, and reusing recently touched
blocks first keeps the working set small.

Hot path: `append` of one token to one sequence is by far the most frequent call (one per
sequence per decode step), so it is handled inline, with the same checks, errors and atomicity as
the general path it falls back to (several tokens, a copy-on-write, or anything unusual).
"""

from __future__ import annotations

from array import array
from collections.abc import Hashable
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass

from pagedkv.errors import (
    DuplicateSequence,
    InvalidArgument,
    InvariantViolation,
    OutOfBlocks,
    UnknownSequence,
)
from pagedkv.free_block_queue import FreeBlockQueue
from pagedkv.memory import format_bytes, physical_memory_bytes
from pagedkv.prefix_cache import Lookup, PrefixCache, PrefixMatch
from pagedkv.sequence import Sequence

Tokens = SequenceABC[int] | int
"""Token ids, or a bare count when contents do not matter (such blocks are never cached)."""

BYTES_PER_BLOCK = 8
"""The manager's own per-block state: `ref_count`, one list slot (plus the free list's and the cache's)."""
MAX_BLOCKS = 2**31 - 1
"""Block ids, and the free list's sentinel, are C ints."""


@dataclass(frozen=True, slots=True)
class Stats:
    """Cumulative counters since the manager was created."""

    queried_tokens: int
    """Prompt tokens looked up in the prefix cache by `allocate`."""
    hit_tokens: int
    """Of those, tokens served from cached blocks."""
    evicted_blocks: int
    """Cached free blocks whose contents were dropped to reuse the block."""
    cow_copies: int
    """Copy-on-write block copies handed back by `append`."""
    allocated_blocks: int
    """Blocks taken from the free list for new contents (including copies)."""
    hashed_blocks: int = 0
    """Block hashes (sha256) computed, by prefix lookups and lazy publication together."""

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.queried_tokens if self.queried_tokens else 0.0


class BlockManager:
    """Paged KV-cache bookkeeping: free list, block tables, ref counts, prefix cache.

    Args:
        num_blocks: blocks in the pool; ids are ``0 .. num_blocks - 1``.
        block_size: token slots per block (vLLM's default is 16).
        enable_prefix_caching: reuse full blocks whose chained content hash matches.
        watermark: fraction of the pool kept free when admitting (`allocate`), so running
            sequences can still grow without preemption; `append` may use it.
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int = 16,
        enable_prefix_caching: bool = False,
        watermark: float = 0.0,
    ) -> None:
        if not isinstance(num_blocks, int) or num_blocks < 1:
            raise InvalidArgument(f"num_blocks must be an integer >= 1, got {num_blocks!r}")
        if not isinstance(block_size, int) or block_size < 1:
            raise InvalidArgument(f"block_size must be an integer >= 1, got {block_size!r}")
        if not 0.0 <= watermark < 1.0:
            raise InvalidArgument(f"watermark must be in [0, 1), got {watermark!r}")
        _check_pool_fits(num_blocks, enable_prefix_caching)
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.watermark = watermark
        self._watermark_blocks = int(watermark * num_blocks)
        # A list, not an int array: ref counts are small ints (CPython shares one object for each
        # of -5..256), so a slot costs 8 bytes, and list indexing is several times faster than
        # array indexing on every free, allocation and copy-on-write check.
        self._ref_count = [0] * num_blocks
        self._free = FreeBlockQueue(num_blocks)
        self._seqs: dict[Hashable, Sequence] = {}
        self._cache = PrefixCache(num_blocks, block_size) if enable_prefix_caching else None
        self._queried_tokens = self._hit_tokens = self._evicted_blocks = 0
        self._cow_copies = self._allocated_blocks = 0

    # ----------------------------------------------------------------- admission

    def can_allocate(self, tokens: Tokens) -> bool:
        """Whether `allocate` of these tokens would succeed now. Changes nothing."""
        num_tokens, token_ids = self._parse(tokens)
        needed, _, _ = self._plan_allocation(num_tokens, token_ids)
        return needed <= self._free.num_free - self._watermark_blocks

    def cached_prefix(self, token_ids: SequenceABC[int]) -> int:
        """How many leading tokens of `token_ids` `allocate` would find in the prefix cache now (whole
        blocks; 0 without prefix caching). Allocates nothing: a scheduler asks it to size a prompt chunk."""
        cache = self._cache
        if cache is None:
            return 0
        return len(cache.match(cache.lookup(token_ids)).blocks) * self.block_size

    def allocate(self, seq_id: Hashable, tokens: Tokens) -> int:
        """Give a new sequence blocks for all its tokens (its prompt).

        Returns how many leading tokens were found in the prefix cache: their KV is already
        in the returned blocks and need not be computed (0 without prefix caching).
        Raises `OutOfBlocks` when the pool, less the watermark, cannot hold them.
        """
        if seq_id in self._seqs:
            raise DuplicateSequence(f"sequence {seq_id!r} is already allocated; free it or pick a new id")
        num_tokens, token_ids = self._parse(tokens)
        needed, lookup, match = self._plan_allocation(num_tokens, token_ids)
        available = self._free.num_free - self._watermark_blocks
        if needed > available:
            raise OutOfBlocks(
                f"allocate({seq_id!r}, {num_tokens} tokens) needs {needed} free blocks but only "
                f"{max(available, 0)} are available ({self._watermark_blocks} kept as watermark); "
                "wait for sequences to finish, preempt one, or use a larger pool"
            )
        cache = self._cache
        if cache is None or lookup is None or match is None:
            seq = self._seqs[seq_id] = Sequence(num_tokens, None)
            seq.block_table.extend(self._take(-(-num_tokens // self.block_size)))
            return 0
        cache.forget(lookup)
        seq = Sequence(num_tokens, lookup.token_ids)
        table = seq.block_table
        self._reuse_cached(match.blocks)
        table.extend(match.blocks)
        table.extend(self._take(-(-num_tokens // self.block_size) - len(table)))
        self._seqs[seq_id] = seq
        hit_tokens = len(match.blocks) * self.block_size
        self._queried_tokens += num_tokens
        self._hit_tokens += hit_tokens
        cache.on_filled(seq, len(match.blocks), num_tokens // self.block_size)
        cache.start(seq, match)
        return hit_tokens

    # ----------------------------------------------------------------- decoding

    def append(self, seq_id: Hashable, tokens: Tokens = 1) -> list[tuple[int, int]]:
        """Append tokens to a sequence; returns the (src_block, dst_block) copies to perform.

        A new block is taken only when the sequence crosses a block boundary. Writing into a
        shared, partially filled last block first copies it (copy-on-write): the caller must
        copy the KV of `src_block` into `dst_block` before writing the new tokens.
        """
        try:
            seq = self._seqs[seq_id]
        except KeyError:
            raise UnknownSequence(f"no sequence {seq_id!r} (never allocated, or already freed)") from None
        # The fast path: one token (an id, or the count 1), no copy-on-write.
        if type(tokens) is list:
            try:
                (token,) = tokens
            except ValueError:
                return self._append(seq_id, seq, tokens)
        elif type(tokens) is int and tokens == 1:
            token = None
        else:
            return self._append(seq_id, seq, tokens)
        length = seq.num_tokens
        offset = length % self.block_size
        if offset == 0:
            if not self._free.num_free:
                raise OutOfBlocks(self._no_room_to_append(seq_id, 1, 1))
            seq.block_table.append(self._take_one())
        elif seq.forked and self._ref_count[seq.block_table[-1]] > 1:
            return self._append(seq_id, seq, tokens)
        seq.num_tokens = length + 1
        if seq.recording:
            if token is None:
                seq.recording = False
            else:
                seq.token_ids.append(token)
                if offset == self.block_size - 1:  # the block is full: `PrefixCache.on_filled`, inlined
                    cache = self._cache
                    if cache is not None:  # always, while recording
                        cache.block_is_cached[seq.block_table[-1]] = 1
                        if seq.frontier == length // self.block_size:
                            cache.generation += 1
        return []

    def append_batch(
        self, seq_ids: SequenceABC[Hashable], token_ids: SequenceABC[int] | None = None
    ) -> list[tuple[int, int]]:
        """Append one token to each of `seq_ids` (distinct); same effect as `append` on each in turn.

        One call per engine step instead of one per sequence: the capacity check and the
        free-list pops are done once for the whole batch.
        """
        by_id = self._seqs
        try:
            seqs = [by_id[seq_id] for seq_id in seq_ids]
        except KeyError:
            seqs = [self._get(seq_id) for seq_id in seq_ids]  # raises UnknownSequence, naming the id
        if len(set(map(id, seqs))) != len(seqs):
            raise InvalidArgument("append_batch: seq_ids must be distinct; call append for several tokens")
        if token_ids is not None and len(token_ids) != len(seqs):
            raise InvalidArgument(f"append_batch: {len(seqs)} sequences but {len(token_ids)} token ids")
        needed = self._blocks_for_batch(seqs)
        if needed > self._free.num_free:
            raise OutOfBlocks(
                f"append_batch of {len(seqs)} sequences needs {needed} free blocks, "
                f"{self._free.num_free} free; preempt a sequence and retry"
            )
        size, ref_count, cache = self.block_size, self._ref_count, self._cache
        copies = []
        fresh = iter(self._take(needed))
        for i, seq in enumerate(seqs):
            length = seq.num_tokens
            offset = length % size
            if offset == 0:
                seq.block_table.append(next(fresh))
            elif seq.forked and ref_count[seq.block_table[-1]] > 1:
                table, dst = seq.block_table, next(fresh)
                copies.append((table[-1], dst))
                ref_count[table[-1]] -= 1
                table[-1] = dst
            seq.num_tokens = length + 1
            if seq.recording:
                if token_ids is None:
                    seq.recording = False
                else:
                    seq.token_ids.append(token_ids[i])
                    if offset == size - 1 and cache is not None:
                        cache.on_filled(seq, length // size, length // size + 1)
        self._cow_copies += len(copies)
        return copies

    def _blocks_for_batch(self, seqs: list[Sequence]) -> int:
        """Free blocks one more token for each of `seqs` takes: boundaries crossed, plus copies of shared
        partially filled blocks by every holder but the last one to write."""
        size, ref_count = self.block_size, self._ref_count
        needed = 0
        copied_away: dict[int, int] = {}  # shared block -> holders earlier in the batch that copy it
        for seq in seqs:
            if seq.num_tokens % size == 0:
                needed += 1
            elif seq.forked:
                last = seq.block_table[-1]
                if ref_count[last] - copied_away.get(last, 0) > 1:
                    copied_away[last] = copied_away.get(last, 0) + 1
                    needed += 1
        return needed

    # ----------------------------------------------------------------- sharing and release

    def fork(self, parent_id: Hashable, child_id: Hashable) -> None:
        """Create `child_id` sharing all of `parent_id`'s blocks (beam search, parallel sampling).

        No block is allocated: every shared block's ref_count goes up by one. Full blocks stay
        shared forever; the partially filled last block is copied by whichever sequence writes
        into it first (see `append`).
        """
        parent = self._get(parent_id)
        if child_id in self._seqs:
            raise DuplicateSequence(f"fork target {child_id!r} is already allocated; pick a new id")
        child = Sequence(parent.num_tokens, list(parent.token_ids))
        child.recording = parent.recording
        parent.forked = child.forked = True
        child.block_table = array("i", parent.block_table)
        ref_count = self._ref_count
        for block in parent.block_table:
            ref_count[block] += 1
        self._seqs[child_id] = child
        if self._cache is not None and parent.token_ids:
            self._cache.fork(parent, child)

    def free(self, seq_id: Hashable) -> None:
        """Drop a sequence; blocks whose ref_count reaches 0 return to the free list.

        Last block first; cached blocks (full, known contents) join the tail, the others the head
        (see the module docstring for this order and why).
        """
        seq = self._seqs.pop(seq_id, None)
        if seq is None:
            raise UnknownSequence(f"free({seq_id!r}): no such sequence (never allocated, or already freed)")
        ref_count, table = self._ref_count, seq.block_table
        for block in table:
            ref_count[block] -= 1
        released = [block for block in reversed(table) if not ref_count[block]]
        if self._cache is None:
            self._free.prepend(released)
            return
        is_cached = self._cache.block_is_cached
        self._free.prepend([block for block in released if not is_cached[block]])
        self._free.extend([block for block in released if is_cached[block]])
        self._cache.on_free(seq)

    def reset_prefix_cache(self) -> bool:
        """Forget every cached hash. Refused (returns False, changes nothing) while any sequence is alive."""
        if self._seqs:
            return False
        if self._cache is not None:
            self._cache.reset()
        return True

    # ----------------------------------------------------------------- queries

    def block_table(self, seq_id: Hashable) -> list[int]:
        """Physical block of each logical block of the sequence (a copy)."""
        return list(self._get(seq_id).block_table)

    def num_tokens(self, seq_id: Hashable) -> int:
        return self._get(seq_id).num_tokens

    def translate(self, seq_id: Hashable, pos: int) -> tuple[int, int]:
        """(physical block, offset) of token position `pos`: ``block_table[pos // B], pos % B``."""
        seq = self._get(seq_id)
        if not 0 <= pos < seq.num_tokens:
            raise InvalidArgument(
                f"position {pos!r} is outside sequence {seq_id!r} of {seq.num_tokens} tokens "
                f"(valid: 0..{seq.num_tokens - 1})"
            )
        return seq.block_table[pos // self.block_size], pos % self.block_size

    def slot(self, seq_id: Hashable, pos: int) -> int:
        """Flat KV slot of token `pos` (vLLM's slot mapping): ``block * block_size + offset``."""
        block, offset = self.translate(seq_id, pos)
        return block * self.block_size + offset

    def ref_count(self, block_id: int) -> int:
        if not 0 <= block_id < self.num_blocks:
            raise InvalidArgument(f"block id {block_id!r} is outside the pool 0..{self.num_blocks - 1}")
        return self._ref_count[block_id]

    @property
    def num_free_blocks(self) -> int:
        """Blocks no sequence holds, cached ones included (they are reused when needed)."""
        return self._free.num_free

    @property
    def num_cached_free_blocks(self) -> int:
        """Free blocks whose contents a prefix lookup could still find. Walks the free list."""
        if self._cache is None:
            return 0
        is_cached = self._cache.block_is_cached
        return sum(is_cached[block] for block in self._free)

    @property
    def usage(self) -> float:
        """Fraction of the pool held by sequences."""
        return 1.0 - self._free.num_free / self.num_blocks

    @property
    def stats(self) -> Stats:
        return Stats(
            queried_tokens=self._queried_tokens,
            hit_tokens=self._hit_tokens,
            evicted_blocks=self._evicted_blocks,
            cow_copies=self._cow_copies,
            allocated_blocks=self._allocated_blocks,
            hashed_blocks=0 if self._cache is None else self._cache.hashed_blocks,
        )

    def free_block_ids(self) -> list[int]:
        """The free list, next-to-be-reused first (for tests and debugging)."""
        return list(self._free)

    def cached_free_block_ids(self) -> list[int]:
        """The free blocks whose contents a prefix lookup could still find, in free-list order (for
        viewers; empty without prefix caching). Walks the free list."""
        if self._cache is None:
            return []
        is_cached = self._cache.block_is_cached
        return [block for block in self._free if is_cached[block]]

    def __contains__(self, seq_id: object) -> bool:
        return seq_id in self._seqs

    def __len__(self) -> int:
        return len(self._seqs)

    def check_invariants(self) -> None:
        """Raise `InvariantViolation` if any bookkeeping is inconsistent (see the module docstring)."""
        free = list(self._free)
        if len(free) != self._free.num_free or len(set(free)) != len(free):
            raise InvariantViolation(
                f"free list has {len(free)} entries, {len(set(free))} distinct, "
                f"but counts {self._free.num_free}"
            )
        holders = [0] * self.num_blocks
        for seq_id, seq in self._seqs.items():
            if len(seq.block_table) != -(-seq.num_tokens // self.block_size):
                raise InvariantViolation(
                    f"sequence {seq_id!r}: {len(seq.block_table)} blocks for {seq.num_tokens} tokens"
                )
            if seq.recording and len(seq.token_ids) != seq.num_tokens:
                raise InvariantViolation(f"sequence {seq_id!r}: token ids out of step with its length")
            for block in seq.block_table:
                holders[block] += 1
        if self._ref_count != holders:
            wrong = next(b for b in range(self.num_blocks) if self._ref_count[b] != holders[b])
            raise InvariantViolation(
                f"block {wrong}: ref_count {self._ref_count[wrong]} but {holders[wrong]} block-table entries"
            )
        if sorted(free) != [b for b in range(self.num_blocks) if holders[b] == 0]:
            raise InvariantViolation("the free list is not exactly the blocks nobody holds")
        if self._cache is not None:
            self._cache.check(self._seqs.values())

    # ----------------------------------------------------------------- internals

    def _get(self, seq_id: Hashable) -> Sequence:
        try:
            return self._seqs[seq_id]
        except KeyError:
            raise UnknownSequence(f"no sequence {seq_id!r} (never allocated, or already freed)") from None

    @staticmethod
    def _parse(tokens: Tokens) -> tuple[int, SequenceABC[int] | None]:
        """(count, token ids or None) from either form; rejects empty and non-positive counts."""
        if isinstance(tokens, int) and not isinstance(tokens, bool):
            if tokens < 1:
                raise InvalidArgument(f"token count must be >= 1, got {tokens}")
            return tokens, None
        if isinstance(tokens, (bool, str, bytes)) or not isinstance(tokens, SequenceABC):
            raise InvalidArgument(f"tokens must be a list of token ids or a positive count, got {tokens!r}")
        if not tokens:
            raise InvalidArgument("token id list is empty; pass at least one token")
        return len(tokens), tokens

    def _plan_allocation(
        self, num_tokens: int, token_ids: SequenceABC[int] | None
    ) -> tuple[int, Lookup | None, PrefixMatch | None]:
        """Blocks the free list must give up, the prompt's lookup and its cached prefix (None, None
        without caching).

        Cached hits held by live sequences cost nothing; cached hits sitting on the free list
        cost one each, since they leave it. Counting them here is what guarantees that taking
        fresh blocks can never evict a block this same allocation is about to reuse.
        """
        num_blocks = -(-num_tokens // self.block_size)
        if token_ids is None or self._cache is None:
            return num_blocks, None, None
        lookup = self._cache.lookup(token_ids)
        match = self._cache.match(lookup)
        ref_count = self._ref_count
        revived = [ref_count[block] for block in match.blocks].count(0)
        return num_blocks - len(match.blocks) + revived, lookup, match

    def _reuse_cached(self, blocks: list[int]) -> None:
        ref_count = self._ref_count
        self._free.remove_all([block for block in blocks if not ref_count[block]])
        for block in blocks:
            ref_count[block] += 1

    def _take(self, count: int) -> list[int]:
        """Pop `count` blocks for new contents; cached ones among them are evicted."""
        if count <= 0:
            return []
        blocks = self._free.popleft_n(count)
        ref_count = self._ref_count
        for block in blocks:
            ref_count[block] = 1
        self._allocated_blocks += count
        if self._cache is not None:
            self._evicted_blocks += self._cache.on_reuse(blocks)
        return blocks

    def _take_one(self) -> int:
        """`_take(1)` for the hot path. The caller checked that a block is free."""
        block = self._free.popleft()
        self._ref_count[block] = 1
        self._allocated_blocks += 1
        cache = self._cache
        if cache is not None and cache.block_is_cached[block]:  # else `on_reuse` has nothing to do
            self._evicted_blocks += cache.on_reuse((block,))
        return block

    def _append(self, seq_id: Hashable, seq: Sequence, tokens: Tokens) -> list[tuple[int, int]]:
        """`append`'s general path: any number of tokens, copy-on-write, every check."""
        num_new, token_ids = self._parse(tokens)
        size, table = self.block_size, seq.block_table
        length = seq.num_tokens
        cow = length % size != 0 and self._ref_count[table[-1]] > 1
        needed = -(-(length + num_new) // size) - len(table) + cow
        if needed > self._free.num_free:
            raise OutOfBlocks(self._no_room_to_append(seq_id, num_new, needed))
        copies = []
        if cow:
            copies.append(self._copy_on_write(table))
        if needed > cow:
            table.extend(self._take(needed - cow))
        seq.num_tokens = length + num_new
        if seq.recording:
            self._record(seq, token_ids, length)
        return copies

    def _no_room_to_append(self, seq_id: Hashable, num_new: int, needed: int) -> str:
        return (
            f"append({seq_id!r}, {num_new} tokens) needs {needed} free blocks, "
            f"{self._free.num_free} free; preempt a sequence (free it or swap it out) and retry"
        )

    def _copy_on_write(self, table: array) -> tuple[int, int]:
        src = table[-1]
        dst = self._take(1)[0]
        self._ref_count[src] -= 1
        table[-1] = dst
        self._cow_copies += 1
        return src, dst

    def _record(self, seq: Sequence, token_ids: SequenceABC[int] | None, old_length: int) -> None:
        """Keep contents for prefix caching; a bare count ends recording for this sequence."""
        if token_ids is None:
            seq.recording = False
            return
        seq.token_ids.extend(token_ids)
        first, end = old_length // self.block_size, seq.num_tokens // self.block_size
        if end > first and self._cache is not None:
            self._cache.on_filled(seq, first, end)


def _check_pool_fits(num_blocks: int, enable_prefix_caching: bool) -> None:
    """Refuse, before allocating anything, a pool whose arrays this machine cannot hold."""
    per_block = BYTES_PER_BLOCK + FreeBlockQueue.BYTES_PER_BLOCK
    if enable_prefix_caching:
        per_block += PrefixCache.BYTES_PER_BLOCK
    need = per_block * num_blocks
    memory = physical_memory_bytes()
    if memory is not None and need > memory:
        raise InvalidArgument(
            f"num_blocks={num_blocks:,} needs {format_bytes(need)} for its block arrays ({per_block} bytes "
            f"per block x {num_blocks:,} blocks), more than this machine's {format_bytes(memory)} of memory; "
            "use fewer blocks"
        )
    if num_blocks > MAX_BLOCKS:
        raise InvalidArgument(
            f"num_blocks={num_blocks:,} is more than the {MAX_BLOCKS:,} block ids a C int holds "
            f"(it would need {format_bytes(need)}, {per_block} bytes per block); use fewer blocks"
        )
