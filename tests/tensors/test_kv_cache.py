"""PagedKVCache: slot-mapping writes land where the block table says, copy_blocks, typed errors."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pagedkv import BlockManager, InvalidArgument  # noqa: E402
from pagedkv.tensors import BlockOutOfRange, CacheMismatch, PagedKVCache  # noqa: E402

B, H, D = 4, 2, 8


def make_cache(num_blocks: int = 16, num_layers: int = 2, dtype: torch.dtype = torch.float32) -> PagedKVCache:
    return PagedKVCache(num_layers, num_blocks, B, H, D, dtype=dtype)


def test_layout_and_sizes() -> None:
    cache = make_cache(num_blocks=10, num_layers=3, dtype=torch.float64)
    assert cache.kv.shape == (3, 2, 10, H, B, D)  # head-major inside a block
    assert cache.key_cache(1).shape == (10, H, B, D)
    assert cache.key_cache(1).data_ptr() == cache.kv[1, 0].data_ptr()  # a view, not a copy
    assert cache.bytes_per_token == 2 * 3 * H * D * 8
    assert cache.nbytes == cache.bytes_per_token * 10 * B
    assert cache.num_slots == 40


def test_writes_of_many_sequences_read_back_through_scrambled_block_tables() -> None:
    torch.manual_seed(0)
    cache = make_cache(num_blocks=20)
    lengths = [1, 3, 4, 5, 8, 9]
    free = torch.randperm(20).tolist()
    tables = [[free.pop() for _ in range(-(-n // B))] for n in lengths]
    keys = [torch.randn(n, H, D) for n in lengths]
    values = [torch.randn(n, H, D) for n in lengths]
    # one write for all tokens of all sequences, slot = block_table[t // B] * B + t % B
    slots = torch.tensor(
        [t[p // B] * B + p % B for t, n in zip(tables, lengths, strict=True) for p in range(n)]
    )
    cache.write(1, slots, torch.cat(keys), torch.cat(values))
    for table, n, k, v in zip(tables, lengths, keys, values, strict=True):
        got_k, got_v = cache.gather(1, table, n)
        assert torch.equal(got_k, k) and torch.equal(got_v, v)
        assert not cache.gather(0, table, n)[0].any()  # layer 0 untouched


def test_a_slot_is_block_and_offset_with_each_heads_keys_contiguous() -> None:
    cache = make_cache(num_blocks=8)
    k, v = torch.randn(2, H, D), torch.randn(2, H, D)
    cache.write(1, torch.tensor([5 * B + 2, 3 * B]), k, v)
    assert torch.equal(cache.kv[1, 0, 5, :, 2], k[0]) and torch.equal(cache.kv[1, 1, 5, :, 2], v[0])
    assert torch.equal(cache.kv[1, 0, 3, :, 0], k[1]) and torch.equal(cache.kv[1, 1, 3, :, 0], v[1])
    assert int((cache.kv != 0).sum()) == 4 * H * D


def test_slots_match_the_block_manager() -> None:
    manager = BlockManager(8, B)
    cache = make_cache(num_blocks=8)
    manager.allocate("a", 6)
    manager.allocate("b", 3)
    manager.append("a", 3)
    k = torch.randn(9, H, D)
    cache.write(0, torch.tensor([manager.slot("a", p) for p in range(9)]), k, k)
    got, _ = cache.gather(0, manager.block_table("a"), 9)
    assert torch.equal(got, k)


def test_copy_blocks_copies_every_layer_k_and_v_and_nothing_else() -> None:
    cache = make_cache(num_blocks=6)
    cache.kv.copy_(torch.randn_like(cache.kv))
    before = cache.kv.clone()
    cache.copy_blocks([(1, 4), (2, 5)])
    assert torch.equal(cache.kv[:, :, 4], before[:, :, 1])
    assert torch.equal(cache.kv[:, :, 5], before[:, :, 2])
    assert torch.equal(cache.kv[:, :, :4], before[:, :, :4])


def test_copy_blocks_reads_all_sources_before_writing() -> None:
    cache = make_cache(num_blocks=3)
    cache.kv.copy_(torch.randn_like(cache.kv))
    before = cache.kv.clone()
    cache.copy_blocks([(0, 1), (1, 2)])  # block 1 is a destination and a source
    assert torch.equal(cache.kv[:, :, 1], before[:, :, 0])
    assert torch.equal(cache.kv[:, :, 2], before[:, :, 1])


def test_copy_blocks_of_nothing_is_a_no_op() -> None:
    cache = make_cache(num_blocks=3)
    cache.copy_blocks([])
    assert not cache.kv.any()


@pytest.mark.parametrize("pairs", [[(0, 16)], [(-1, 2)], [(3, 99)]])
def test_copy_blocks_outside_the_pool(pairs: list[tuple[int, int]]) -> None:
    with pytest.raises(BlockOutOfRange, match="outside the pool of 16 blocks"):
        make_cache().copy_blocks(pairs)


def test_copy_blocks_rejects_a_repeated_destination() -> None:
    with pytest.raises(InvalidArgument, match="destination block appears twice"):
        make_cache().copy_blocks([(0, 2), (1, 2)])


@pytest.mark.parametrize("slot", [64, -1, 1000])
def test_write_to_a_slot_outside_the_pool(slot: int) -> None:
    cache = make_cache()
    k = torch.zeros(2, H, D)
    with pytest.raises(BlockOutOfRange, match=f"slot {slot} is outside the pool's 64 slots"):
        cache.write(0, torch.tensor([0, slot]), k, k)
    assert not cache.kv.any()


def test_write_with_wrong_dtype_names_both() -> None:
    cache = make_cache()
    k = torch.zeros(1, H, D, dtype=torch.float64)
    with pytest.raises(CacheMismatch, match=r"torch.float64.*torch.float32"):
        cache.write(0, torch.tensor([0]), k, k)


@pytest.mark.parametrize("shape", [(1, H + 1, D), (1, H, D - 1), (2, H, D), (H, D)])
def test_write_with_wrong_shape(shape: tuple[int, ...]) -> None:
    cache = make_cache()
    k = torch.zeros(shape)
    with pytest.raises(CacheMismatch, match="the cache expects"):
        cache.write(0, torch.tensor([0]), k, k)


def test_slot_mapping_must_be_int64_vector() -> None:
    cache = make_cache()
    k = torch.zeros(1, H, D)
    with pytest.raises(CacheMismatch, match="1-D int64"):
        cache.write(0, torch.tensor([0.0]), k, k)


def test_gather_checks_block_table() -> None:
    cache = make_cache()
    with pytest.raises(BlockOutOfRange, match="block table entry 16"):
        cache.gather(0, [0, 16], 5)
    with pytest.raises(InvalidArgument, match="need 2 blocks"):
        cache.gather(0, [0], 5)


def test_bad_layer_and_sizes() -> None:
    cache = make_cache(num_layers=2)
    with pytest.raises(InvalidArgument, match="layer 2"):
        cache.key_cache(2)
    with pytest.raises(InvalidArgument, match="num_blocks must be a positive int"):
        PagedKVCache(1, 0, B, H, D)
