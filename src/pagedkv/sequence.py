"""Per-sequence state kept by the block manager.

Invariant: `len(block_table) == ceil(num_tokens / block_size)`; logical block `i` of the
sequence holds token positions `i*B .. i*B+B-1` and lives in physical block `block_table[i]`.
"""

from __future__ import annotations

from array import array


class Sequence:
    """One sequence's block table plus what prefix caching needs to hash its blocks later.

    `block_table` is an int array (4 bytes an entry) rather than a list of Python ints (36
    bytes an entry once ids pass 256): it is the per-token-block cost of every running request.

    `forked`: a fork shared this sequence's blocks, so its partially filled last block may be
    shared and an append must check its ref_count (copy-on-write). A sequence never forked
    cannot share that block (prefix hits share full blocks only), so its appends skip the check.

    Prefix-caching fields (unused when caching is off):
    - `token_ids`: the known contents, a prefix of the sequence (empty when it was allocated by
      count). Appending a bare token count stops recording (`recording = False`): later blocks
      have unknown contents and are never cached.
    - `frontier`: blocks `0 .. frontier-1` have had their chained hash computed;
      `frontier_hash` is the hash of block `frontier-1` (the chain's root when 0).
    - `died_at`: the manager's clock when the sequence was freed (None while alive). A block of
      a dead sequence still holds its contents only if it was not popped for reuse since then.
    """

    __slots__ = (
        "block_table",
        "died_at",
        "forked",
        "frontier",
        "frontier_hash",
        "num_tokens",
        "recording",
        "token_ids",
    )

    def __init__(self, num_tokens: int, token_ids: list[int] | None) -> None:
        self.block_table = array("i")
        self.num_tokens = num_tokens
        self.token_ids: list[int] = [] if token_ids is None else token_ids
        self.recording = token_ids is not None
        self.frontier = 0
        self.frontier_hash = b""
        self.died_at: int | None = None
        self.forked = False
