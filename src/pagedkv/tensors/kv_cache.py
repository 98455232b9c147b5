"""The paged KV store: real keys and values behind the block ids that the `BlockManager` hands out.

Layout: one tensor for all layers,

    kv: [num_layers, 2, num_blocks, num_kv_heads, block_size, head_dim]      (index 0 = keys, 1 = values)

Why this layout:
- a block is one contiguous run of `num_kv_heads * block_size * head_dim` numbers per layer and per
  K/V, and inside it each KV head's `block_size` keys are one contiguous `[block_size, head_dim]`
  tile; the attention gathers those tiles by block table straight into `[seqs, n_kv_heads, tokens,
  head_dim]`, where each (sequence, head) is a plain matrix that `bmm` / SDPA read without a copy;
- the block id is the same axis for every layer and for K and V, so carrying out the manager's
  copy-on-write list is a single indexed copy over the whole model (`copy_blocks`);
- a token's slot, `block_id * block_size + offset`, names (block, offset), so writing the K/V of many
  tokens of many sequences at once is one indexed assignment per layer driven by the slot mapping.

Invariant: slot `s` of layer `l` holds the K/V of the token that the block manager mapped to `s`, for
every token that has been written; the store never decides which slots are live (the manager does),
so slots of free blocks may hold stale but finite numbers and readers must mask by length.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from pagedkv.errors import InvalidArgument
from pagedkv.tensors.errors import BlockOutOfRange, CacheMismatch, require_positive_ints
from pagedkv.tensors.memory import check_fits_in_memory, kv_cache_bytes


class PagedKVCache:
    """Block-shaped K/V tensors for every layer of a model, addressed by slot and by block table."""

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        block_size: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        require_positive_ints(
            num_layers=num_layers,
            num_blocks=num_blocks,
            block_size=block_size,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
        )
        self.num_layers = num_layers
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        if torch.device(device).type == "cpu":
            element_size = torch.empty((), dtype=dtype).element_size()
            nbytes = kv_cache_bytes(num_layers, num_blocks, block_size, num_kv_heads, head_dim, element_size)
            check_fits_in_memory(
                nbytes,
                f"a paged KV cache of {num_blocks:,} blocks x {block_size} slots x {num_layers} layers",
                "use fewer blocks (num_blocks)",
            )
        # zeros, not empty: masked-out slots must stay finite (0 * NaN would poison attention).
        # kv: [num_layers, 2, num_blocks, num_kv_heads, block_size, head_dim]
        self.kv = torch.zeros(
            (num_layers, 2, num_blocks, num_kv_heads, block_size, head_dim), dtype=dtype, device=device
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.kv.dtype

    @property
    def device(self) -> torch.device:
        return self.kv.device

    @property
    def num_slots(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def bytes_per_token(self) -> int:
        """K and V of one token over all layers: what one slot costs."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.kv.element_size()

    @property
    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()

    def key_cache(self, layer: int) -> torch.Tensor:
        """Keys of one layer (a view): [num_blocks, num_kv_heads, block_size, head_dim]."""
        return self.kv[self._check_layer(layer), 0]

    def value_cache(self, layer: int) -> torch.Tensor:
        """Values of one layer (a view): [num_blocks, num_kv_heads, block_size, head_dim]."""
        return self.kv[self._check_layer(layer), 1]

    def write(self, layer: int, slot_mapping: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        """Store the K/V of `len(slot_mapping)` tokens, token i at slot `slot_mapping[i]`.

        key, value: [num_tokens, num_kv_heads, head_dim]; slot_mapping: [num_tokens] int64.
        """
        self.check_slots(slot_mapping)
        expected = (slot_mapping.shape[0], self.num_kv_heads, self.head_dim)
        for name, tensor in (("key", key), ("value", value)):
            self._check_tensor(name, tensor, expected)
        block_ids = torch.div(slot_mapping, self.block_size, rounding_mode="floor")
        offsets = slot_mapping - block_ids * self.block_size
        # cache[block_ids, :, offsets]: [num_tokens, num_kv_heads, head_dim], the layout of key / value
        self.key_cache(layer)[block_ids, :, offsets] = key
        self.value_cache(layer)[block_ids, :, offsets] = value

    def copy_blocks(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Carry out copy-on-write: block `dst` becomes a copy of block `src`, in every layer, K and V.

        All sources are read before any destination is written, so the result does not depend on
        the order of the pairs.
        """
        pairs = list(pairs)
        if not pairs:
            return
        src = [s for s, _ in pairs]
        dst = [d for _, d in pairs]
        self.check_block_ids(src + dst, what="copy_blocks pair")
        if len(set(dst)) != len(dst):
            raise InvalidArgument(f"copy_blocks: a destination block appears twice in {pairs}")
        index_src = torch.tensor(src, dtype=torch.long, device=self.device)
        index_dst = torch.tensor(dst, dtype=torch.long, device=self.device)
        self.kv.index_copy_(2, index_dst, self.kv.index_select(2, index_src))

    def gather(
        self, layer: int, block_table: Sequence[int], num_tokens: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The K/V of one sequence laid out contiguously: ([num_tokens, n_kv_heads, head_dim], same).

        This is the plain "read by block table" (token t lives at block_table[t // B], offset t % B);
        the attention kernel does the same for a whole batch without this per-sequence copy.
        """
        needed = -(-num_tokens // self.block_size)
        if num_tokens < 0 or needed > len(block_table):
            raise InvalidArgument(
                f"gather: {num_tokens} tokens need {needed} blocks but the block table has {len(block_table)}"
            )
        ids = list(block_table[:needed])
        self.check_block_ids(ids, what="block table entry")
        index = torch.tensor(ids, dtype=torch.long, device=self.device)
        shape = (needed * self.block_size, self.num_kv_heads, self.head_dim)
        # [needed, n_kv_heads, block_size, head_dim] -> [needed * block_size, n_kv_heads, head_dim]
        key = self.key_cache(layer).index_select(0, index).transpose(1, 2).reshape(shape)[:num_tokens]
        value = self.value_cache(layer).index_select(0, index).transpose(1, 2).reshape(shape)[:num_tokens]
        return key, value

    def check_block_ids(self, block_ids: Iterable[int], what: str = "block id") -> None:
        for block_id in block_ids:
            if not 0 <= block_id < self.num_blocks:
                raise BlockOutOfRange(
                    f"{what} {block_id} is outside the pool of {self.num_blocks} blocks "
                    f"(valid: 0..{self.num_blocks - 1})"
                )

    def check_slots(self, slot_mapping: torch.Tensor) -> None:
        if slot_mapping.dim() != 1 or slot_mapping.dtype != torch.long:
            raise CacheMismatch(
                f"slot_mapping must be a 1-D int64 tensor, got shape {tuple(slot_mapping.shape)} "
                f"dtype {slot_mapping.dtype}"
            )
        if slot_mapping.numel() == 0:
            return
        low, high = int(slot_mapping.min()), int(slot_mapping.max())
        if low < 0 or high >= self.num_slots:
            bad = low if low < 0 else high
            raise BlockOutOfRange(
                f"slot {bad} is outside the pool's {self.num_slots} slots "
                f"({self.num_blocks} blocks of {self.block_size}); slots come from BlockManager.slot()"
            )

    def _check_layer(self, layer: int) -> int:
        if not 0 <= layer < self.num_layers:
            raise InvalidArgument(f"layer {layer} is outside 0..{self.num_layers - 1}")
        return layer

    def _check_tensor(self, name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
        if tuple(tensor.shape) != shape:
            raise CacheMismatch(
                f"{name} has shape {tuple(tensor.shape)}, the cache expects "
                f"[num_tokens={shape[0]}, num_kv_heads={shape[1]}, head_dim={shape[2]}]"
            )
        if tensor.dtype != self.dtype or tensor.device != self.device:
            raise CacheMismatch(
                f"{name} is {tensor.dtype} on {tensor.device} but the cache is {self.dtype} on "
                f"{self.device}; "
                "build the cache with the model's dtype and device"
            )

    def __repr__(self) -> str:
        return (
            f"PagedKVCache(num_layers={self.num_layers}, num_blocks={self.num_blocks}, "
            f"block_size={self.block_size}, num_kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, "
            f"dtype={self.dtype}, {self.nbytes / 2**20:.1f} MiB)"
        )
