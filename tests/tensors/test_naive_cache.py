"""NaiveKVCache: the contiguous one-row-per-sequence cache, its measured waste, and paged vs naive."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from pagedkv import BlockManager, DuplicateSequence, InvalidArgument, OutOfBlocks, UnknownSequence  # noqa: E402
from pagedkv.tensors import AttentionMetadata, CacheMismatch, NaiveKVCache, PagedKVCache, paged_attention  # noqa: E402

H, D = 2, 8


def test_waste_is_the_reserved_but_empty_share() -> None:
    cache = NaiveKVCache(max_seqs=4, max_seq_len=64, num_layers=2, num_kv_heads=H, head_dim=D)
    assert cache.kv.shape == (2, 2, 4, 64, H, D)
    for seq, n in (("a", 10), ("b", 40), ("c", 1)):
        cache.allocate(seq, n)
    cache.append("c", 5)
    mem = cache.memory()
    per_token = 2 * 2 * H * D * 4
    assert mem.total_bytes == cache.kv.numel() * 4 == 4 * 64 * per_token
    assert mem.reserved_bytes == 3 * 64 * per_token
    assert mem.used_bytes == (10 + 40 + 6) * per_token
    assert mem.waste == pytest.approx(1 - 56 / 192)
    assert mem.utilization == pytest.approx(56 / 256)
    cache.free("b")
    assert cache.memory().waste == pytest.approx(1 - 16 / 128)


def test_paged_reservation_wastes_less_than_naive_for_the_same_sequences() -> None:
    lengths = [10, 40, 6, 63, 17]
    naive = NaiveKVCache(max_seqs=5, max_seq_len=64, num_layers=1, num_kv_heads=H, head_dim=D)
    manager = BlockManager(num_blocks=40, block_size=8)
    for i, n in enumerate(lengths):
        naive.allocate(i, n)
        manager.allocate(i, n)
    paged_reserved = manager.usage * manager.num_blocks * manager.block_size
    paged_waste = 1 - sum(lengths) / paged_reserved
    assert paged_reserved == sum(-(-n // 8) * 8 for n in lengths)
    assert paged_waste < (8 - 1) * len(lengths) / sum(lengths)  # at most B-1 slots per sequence
    assert naive.memory().waste == pytest.approx(1 - sum(lengths) / (5 * 64))
    assert paged_waste < naive.memory().waste


def test_contiguous_rows_attend_like_the_paged_store() -> None:
    """The same K/V written to both caches gives the same attention output."""
    torch.manual_seed(0)
    lengths = [3, 8, 13]
    naive = NaiveKVCache(max_seqs=3, max_seq_len=16, num_layers=1, num_kv_heads=H, head_dim=D)
    manager = BlockManager(num_blocks=12, block_size=4)
    paged = PagedKVCache(1, 12, 4, H, D)
    for i, n in enumerate(lengths):
        k, v = torch.randn(n, H, D), torch.randn(n, H, D)
        naive.allocate(i, n)
        manager.allocate(i, n)
        naive.write(0, torch.tensor([naive.slot(i, p) for p in range(n)]), k, v)
        paged.write(0, torch.tensor([manager.slot(i, p) for p in range(n)]), k, v)
        got_k, got_v = naive.keys_values(0, i)
        assert torch.equal(got_k, k) and torch.equal(got_v, v)
    query = torch.randn(3, 4, D)
    md = AttentionMetadata.build(
        [manager.block_table(i) for i in range(3)], lengths, key_cache=paged.key_cache(0)
    )
    got = paged_attention(query, paged.key_cache(0), paged.value_cache(0), md)
    for i in range(3):
        k, v = naive.keys_values(0, i)
        want = F.scaled_dot_product_attention(
            query[i : i + 1].transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), enable_gqa=True
        ).transpose(0, 1)
        assert (got[i : i + 1] - want).abs().max() <= 1e-5


def test_limits_of_a_contiguous_cache() -> None:
    cache = NaiveKVCache(max_seqs=1, max_seq_len=8, num_layers=1, num_kv_heads=H, head_dim=D)
    with pytest.raises(InvalidArgument, match="max_seq_len=8"):
        cache.allocate("a", 9)
    cache.allocate("a", 8)
    with pytest.raises(InvalidArgument, match="would hold 9 tokens"):
        cache.append("a")
    with pytest.raises(OutOfBlocks, match="all 1 rows"):
        cache.allocate("b", 1)
    with pytest.raises(DuplicateSequence):
        cache.allocate("a", 1)
    with pytest.raises(UnknownSequence):
        cache.free("b")
    with pytest.raises(InvalidArgument, match="position 8"):
        cache.slot("a", 8)
    with pytest.raises(CacheMismatch, match="float64"):
        k = torch.zeros(1, H, D, dtype=torch.float64)
        cache.write(0, torch.tensor([0]), k, k)
    cache.free("a")
    assert cache.allocate("b", 2) == 0  # the row is reusable
