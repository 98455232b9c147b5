"""The naive contiguous KV cache that paging replaces, as a real tensor, with its waste measured.

Layout: kv: [num_layers, 2, max_seqs, max_seq_len, num_kv_heads, head_dim]. Admitting a sequence
reserves a whole row of `max_seq_len` slots up front, because a contiguous cache cannot grow a
sequence in place; the slots beyond the sequence's current length are reserved but hold nothing.
That reservation is the waste the PagedAttention paper measures (most of a pre-allocated KV cache).

Invariant: a row belongs to at most one live sequence, and positions `0 .. length-1` of that row
hold that sequence's K/V once written; `memory()` reports exactly those counts.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import torch

from pagedkv.errors import DuplicateSequence, InvalidArgument, OutOfBlocks, UnknownSequence
from pagedkv.tensors.errors import CacheMismatch, require_positive_ints


@dataclass(frozen=True)
class NaiveMemory:
    """A snapshot of where the bytes of a naive cache go."""

    total_bytes: int  # the whole tensor
    reserved_bytes: int  # rows held by live sequences
    used_bytes: int  # slots that hold a token's K/V

    @property
    def waste(self) -> float:
        """Fraction of the reserved bytes that hold no token (0 when nothing is reserved)."""
        return 1.0 - self.used_bytes / self.reserved_bytes if self.reserved_bytes else 0.0

    @property
    def utilization(self) -> float:
        """Fraction of the whole tensor that holds tokens."""
        return self.used_bytes / self.total_bytes


class NaiveKVCache:
    """One pre-reserved row of `max_seq_len` slots per sequence (the pre-vLLM way)."""

    def __init__(
        self,
        max_seqs: int,
        max_seq_len: int,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        require_positive_ints(
            max_seqs=max_seqs,
            max_seq_len=max_seq_len,
            num_layers=num_layers,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
        )
        self.max_seqs = max_seqs
        self.max_seq_len = max_seq_len
        self.num_layers = num_layers
        # kv: [num_layers, 2, max_seqs, max_seq_len, num_kv_heads, head_dim]
        self.kv = torch.zeros(
            (num_layers, 2, max_seqs, max_seq_len, num_kv_heads, head_dim), dtype=dtype, device=device
        )
        self._free_rows = list(range(max_seqs))
        self._row: dict[Hashable, int] = {}
        self._length: dict[Hashable, int] = {}

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.num_layers * self.kv.shape[4] * self.kv.shape[5] * self.kv.element_size()

    def allocate(self, seq_id: Hashable, num_tokens: int = 0) -> int:
        """Reserve a row for `seq_id` holding `num_tokens` tokens; returns the row."""
        if seq_id in self._row:
            raise DuplicateSequence(f"sequence {seq_id!r} already holds row {self._row[seq_id]}")
        self._check_length(seq_id, num_tokens)
        if not self._free_rows:
            raise OutOfBlocks(
                f"all {self.max_seqs} rows of the naive cache are reserved; free a sequence first "
                "(a contiguous cache can hold no more sequences than it has rows)"
            )
        row = self._free_rows.pop(0)
        self._row[seq_id] = row
        self._length[seq_id] = num_tokens
        return row

    def append(self, seq_id: Hashable, num_tokens: int = 1) -> None:
        """Grow `seq_id` by `num_tokens` inside its reserved row (never moves it)."""
        length = self._get_length(seq_id) + num_tokens
        self._check_length(seq_id, length)
        self._length[seq_id] = length

    def free(self, seq_id: Hashable) -> None:
        self._get_length(seq_id)
        self._free_rows.append(self._row.pop(seq_id))
        del self._length[seq_id]

    def num_tokens(self, seq_id: Hashable) -> int:
        return self._get_length(seq_id)

    def slot(self, seq_id: Hashable, pos: int) -> int:
        """Flat index of token `pos` of `seq_id`: row * max_seq_len + pos."""
        if not 0 <= pos < self._get_length(seq_id):
            raise InvalidArgument(
                f"position {pos} is outside sequence {seq_id!r} of {self._length[seq_id]} tokens"
            )
        return self._row[seq_id] * self.max_seq_len + pos

    def write(self, layer: int, slot_mapping: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        """key, value: [num_tokens, num_kv_heads, head_dim], token i to slot_mapping[i]."""
        flat_shape = (self.max_seqs * self.max_seq_len, *self.kv.shape[4:])
        for name, tensor in (("key", key), ("value", value)):
            if tensor.shape != (slot_mapping.shape[0], *self.kv.shape[4:]) or tensor.dtype != self.kv.dtype:
                raise CacheMismatch(
                    f"{name} is {tuple(tensor.shape)} {tensor.dtype}, expected "
                    f"[{slot_mapping.shape[0]}, {self.kv.shape[4]}, {self.kv.shape[5]}] {self.kv.dtype}"
                )
        self.kv[layer, 0].view(flat_shape).index_copy_(0, slot_mapping, key)
        self.kv[layer, 1].view(flat_shape).index_copy_(0, slot_mapping, value)

    def keys_values(self, layer: int, seq_id: Hashable) -> tuple[torch.Tensor, torch.Tensor]:
        """Contiguous views (no copy) of a sequence's K/V: [length, num_kv_heads, head_dim] each."""
        row, length = self._row.get(seq_id), self._get_length(seq_id)
        return self.kv[layer, 0, row, :length], self.kv[layer, 1, row, :length]

    def memory(self) -> NaiveMemory:
        per_token = self.bytes_per_token
        return NaiveMemory(
            total_bytes=self.kv.numel() * self.kv.element_size(),
            reserved_bytes=len(self._row) * self.max_seq_len * per_token,
            used_bytes=sum(self._length.values()) * per_token,
        )

    def _get_length(self, seq_id: Hashable) -> int:
        if seq_id not in self._length:
            raise UnknownSequence(f"sequence {seq_id!r} holds no row of the naive cache")
        return self._length[seq_id]

    def _check_length(self, seq_id: Hashable, length: int) -> None:
        if not 0 <= length <= self.max_seq_len:
            raise InvalidArgument(
                f"sequence {seq_id!r} would hold {length} tokens but a row holds "
                f"max_seq_len={self.max_seq_len}; "
                "a contiguous cache must reserve the longest length up front"
            )
