"""paged_attention equals contiguous scaled_dot_product_attention (max abs error <= 1e-5 in float32).

Block tables are random permutations of the pool, lengths cross and land on block boundaries, the
pool's unused slots hold large values (so a wrong mask or a wrong block shows up), and the batch
mixes decode, causal prefill and prefill that continues a cached prefix. Decode runs on both
backends: the plain-PyTorch split-K path and the Numba kernel that reads blocks in place.
"""

from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from pagedkv import BlockManager, InvalidArgument  # noqa: E402
from pagedkv.tensors import (  # noqa: E402
    AttentionMetadata,
    BackendUnavailable,
    BlockOutOfRange,
    CacheMismatch,
    PagedKVCache,
    paged_attention,
)

TOL = 1e-5
B = 4
LENGTHS = [1, 3, 4, 5, 7, 8, 9, 12, 16, 17, 31, 32]  # B-1, B, B+1, multiples of B, ...
HAS_NUMBA = importlib.util.find_spec("numba") is not None
NO_NUMBA = pytest.mark.skipif(
    not HAS_NUMBA, reason="numba is not installed (optional decode backend: pip install numba)"
)
BACKENDS = ["torch", pytest.param("numba", marks=NO_NUMBA)]


class Pool:
    """A paged cache filled for some sequences through random block tables, plus the contiguous truth."""

    def __init__(self, lengths: list[int], n_kv_heads: int, head_dim: int, dtype: torch.dtype, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        num_blocks = sum(-(-n // B) for n in lengths) + 3
        self.cache = PagedKVCache(1, num_blocks, B, n_kv_heads, head_dim, dtype=dtype)
        self.cache.kv.fill_(1e4)  # stale garbage: must never leak into a result
        free = torch.randperm(num_blocks, generator=gen).tolist()
        self.tables = [[free.pop() for _ in range(-(-n // B))] for n in lengths]
        self.keys = [torch.randn(n, n_kv_heads, head_dim, generator=gen, dtype=dtype) for n in lengths]
        self.values = [torch.randn(n, n_kv_heads, head_dim, generator=gen, dtype=dtype) for n in lengths]
        for table, k, v in zip(self.tables, self.keys, self.values, strict=True):
            slots = torch.tensor([table[p // B] * B + p % B for p in range(len(k))])
            self.cache.write(0, slots, k, v)

    def attend(
        self, query: torch.Tensor, lengths: list[int], query_lens: list[int] | None, **kwargs
    ) -> torch.Tensor:
        budget = kwargs.pop("workspace_bytes", 1 << 24)
        chunk = kwargs.pop("decode_chunk_bytes", None)
        md = AttentionMetadata.build(
            self.tables,
            lengths,
            query_lens,
            key_cache=self.cache.key_cache(0),
            workspace_bytes=budget,
            decode_chunk_bytes=chunk,
        )
        return paged_attention(query, self.cache.key_cache(0), self.cache.value_cache(0), md, **kwargs)


def contiguous(q, k, v, context: int, sliding_window: int | None = None) -> torch.Tensor:
    """SDPA on contiguous K/V of one sequence; q: [q_len, H, D] are its last q_len positions."""
    q_len = q.shape[0]
    q_pos = torch.arange(context - q_len, context)[:, None]
    k_pos = torch.arange(context)[None, :]
    mask = k_pos <= q_pos
    if sliding_window is not None:
        mask &= k_pos > q_pos - sliding_window
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask, enable_gqa=True
    )
    return out.transpose(0, 1)


def reference(
    pool: Pool, query: torch.Tensor, lengths: list[int], query_lens: list[int], **kwargs
) -> torch.Tensor:
    outs, row = [], 0
    for k, v, n, q_len in zip(pool.keys, pool.values, lengths, query_lens, strict=True):
        outs.append(contiguous(query[row : row + q_len], k, v, n, **kwargs))
        row += q_len
    return torch.cat(outs)


@pytest.mark.parametrize(("n_heads", "n_kv_heads"), [(8, 2), (4, 4), (6, 1)])
@pytest.mark.parametrize("workspace_bytes", [1, 1 << 24])
# decode chunks of one tile (every pair split along its tokens), of 3 tiles (splits that end mid-pair),
# the default (several whole pairs per chunk) and one chunk for the whole group
@pytest.mark.parametrize("decode_chunk_bytes", [1, 3 * B * 16 * 4, None, 1 << 30])
@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_matches_contiguous_sdpa(
    n_heads: int, n_kv_heads: int, workspace_bytes: int, decode_chunk_bytes: int, backend: str
) -> None:
    pool = Pool(LENGTHS, n_kv_heads, 16, torch.float32)
    query = torch.randn(len(LENGTHS), n_heads, 16)
    got = pool.attend(
        query,
        LENGTHS,
        None,
        workspace_bytes=workspace_bytes,
        decode_chunk_bytes=decode_chunk_bytes,
        backend=backend,
    )
    want = reference(pool, query, LENGTHS, [1] * len(LENGTHS))
    assert (got - want).abs().max() <= TOL


def test_decode_chunks_cover_every_pair_and_slot_once() -> None:
    pool = Pool([9, 32], 2, 16, torch.float32)
    tile = B * 16 * 4  # one (block, KV head) tile of float32 keys
    md = AttentionMetadata.build(
        pool.tables, [9, 32], key_cache=pool.cache.key_cache(0), decode_chunk_bytes=3 * tile
    )
    (group,) = md.groups  # 2 sequences padded to 8 blocks: 4 (sequence, KV head) pairs of 32 slots
    covered = torch.zeros(4, 32, dtype=torch.int64)
    for chunk in group.chunks:
        covered[chunk.pairs, chunk.slots] += 1
        assert chunk.tiles.numel() <= 3
    assert torch.equal(covered, torch.ones_like(covered))
    whole = AttentionMetadata.build(
        pool.tables, [9, 32], key_cache=pool.cache.key_cache(0), decode_chunk_bytes=16 * tile
    )
    assert [(c.pairs, c.slots) for c in whole.groups[0].chunks] == [
        (slice(0, 2), slice(0, 32)),
        (slice(2, 4), slice(0, 32)),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_over_full_blocks_needs_no_mask_and_still_matches(backend: str) -> None:
    lengths = [8, 8, 16, 16]  # same padded length per group only for the first two
    pool = Pool(lengths, 2, 16, torch.float32)
    md = AttentionMetadata.build(pool.tables[:2], lengths[:2], key_cache=pool.cache.key_cache(0))
    assert md.groups[0].excluded(None) is None
    query = torch.randn(4, 8, 16)
    want = reference(pool, query, lengths, [1] * 4)
    assert (pool.attend(query, lengths, None, backend=backend) - want).abs().max() <= TOL


@pytest.mark.parametrize("workspace_bytes", [1, 1 << 24])
def test_causal_prefill_matches_contiguous_sdpa(workspace_bytes: int) -> None:
    pool = Pool(LENGTHS, 2, 16, torch.float32, seed=1)
    query = torch.randn(sum(LENGTHS), 8, 16)
    got = pool.attend(query, LENGTHS, LENGTHS, workspace_bytes=workspace_bytes)
    assert (got - reference(pool, query, LENGTHS, LENGTHS)).abs().max() <= TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_prefill_prefix_continuation_and_decode_in_one_call(backend: str) -> None:
    lengths = [9, 4, 17, 5, 12, 1, 32, 8]
    query_lens = [9, 1, 5, 1, 4, 1, 31, 8]  # full prefill, decode, continuation after a cached prefix ...
    pool = Pool(lengths, 2, 16, torch.float32, seed=2)
    query = torch.randn(sum(query_lens), 8, 16)
    got = pool.attend(query, lengths, query_lens, workspace_bytes=1 << 12, backend=backend)
    assert (got - reference(pool, query, lengths, query_lens)).abs().max() <= TOL


@pytest.mark.parametrize("window", [1, 3, 4, 6, 40])
@pytest.mark.parametrize("decode_chunk_bytes", [1, None])
@pytest.mark.parametrize("backend", BACKENDS)
def test_sliding_window_matches_masked_sdpa(window: int, decode_chunk_bytes: int, backend: str) -> None:
    query_lens = [1, 3, 4, 1, 7, 8, 1, 12, 16, 2, 31, 1]
    pool = Pool(LENGTHS, 2, 16, torch.float32, seed=3)
    query = torch.randn(sum(query_lens), 8, 16)
    got = pool.attend(
        query,
        LENGTHS,
        query_lens,
        sliding_window=window,
        decode_chunk_bytes=decode_chunk_bytes,
        backend=backend,
    )
    want = reference(pool, query, LENGTHS, query_lens, sliding_window=window)
    assert (got - want).abs().max() <= TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_scale_is_applied(backend: str) -> None:
    pool = Pool([5, 9], 1, 8, torch.float32)
    query = torch.randn(2, 2, 8)
    got = pool.attend(query, [5, 9], None, scale=0.05, backend=backend)
    for i, (k, v) in enumerate(zip(pool.keys, pool.values, strict=True)):
        want = F.scaled_dot_product_attention(
            query[i : i + 1].transpose(0, 1),
            k.transpose(0, 1),
            v.transpose(0, 1),
            scale=0.05,
            enable_gqa=True,
        ).transpose(0, 1)
        assert (got[i : i + 1] - want).abs().max() <= TOL


@pytest.mark.parametrize("decode", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_agrees_to_double_rounding(decode: bool, backend: str) -> None:
    pool = Pool(LENGTHS, 2, 16, torch.float64)
    query_lens = [1] * len(LENGTHS) if decode else LENGTHS
    query = torch.randn(sum(query_lens), 8, 16, dtype=torch.float64)
    got = pool.attend(
        query,
        LENGTHS,
        None if decode else LENGTHS,
        decode_chunk_bytes=3 * B * 16 * 8,
        backend=backend,
    )
    assert (got - reference(pool, query, LENGTHS, query_lens)).abs().max() <= 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_after_fork_and_copy_on_write(backend: str) -> None:
    """Parent and child share a partial block; each appends its own token; CoW keeps both right."""
    torch.manual_seed(4)
    n_kv, head_dim = 2, 16
    manager = BlockManager(12, B)
    cache = PagedKVCache(1, 12, B, n_kv, head_dim)
    prompt_k, prompt_v = torch.randn(6, n_kv, head_dim), torch.randn(6, n_kv, head_dim)
    manager.allocate("parent", 6)
    cache.write(0, torch.tensor([manager.slot("parent", p) for p in range(6)]), prompt_k, prompt_v)
    manager.fork("parent", "child")
    own = {}
    for seq in ("child", "parent"):  # the child writes first, so the shared block is copied for it
        cache.copy_blocks(manager.append(seq))
        k, v = torch.randn(1, n_kv, head_dim), torch.randn(1, n_kv, head_dim)
        cache.write(0, torch.tensor([manager.slot(seq, 6)]), k, v)
        own[seq] = (torch.cat([prompt_k, k]), torch.cat([prompt_v, v]))
    assert manager.block_table("child")[0] == manager.block_table("parent")[0]  # full block still shared
    assert manager.block_table("child")[1] != manager.block_table("parent")[1]  # partial block was copied
    tables = [manager.block_table("parent"), manager.block_table("child")]
    md = AttentionMetadata.build(tables, [7, 7], key_cache=cache.key_cache(0))
    query = torch.randn(2, 8, head_dim)
    got = paged_attention(query, cache.key_cache(0), cache.value_cache(0), md, backend=backend)
    for i, seq in enumerate(("parent", "child")):
        want = contiguous(query[i : i + 1], *own[seq], 7)
        assert (got[i : i + 1] - want).abs().max() <= TOL


def test_block_table_past_the_pool() -> None:
    cache = PagedKVCache(1, 4, B, 1, 8)
    with pytest.raises(
        BlockOutOfRange, match="sequence 1: block table entry 4 is outside the pool of 4 blocks"
    ):
        AttentionMetadata.build([[0], [1, 4]], [3, 6], key_cache=cache.key_cache(0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_padding_past_the_needed_blocks_is_ignored(backend: str) -> None:
    pool = Pool([5], 1, 8, torch.float32)
    padded = torch.tensor([pool.tables[0] + [-1, 999]])
    md = AttentionMetadata.build(padded, torch.tensor([5]), key_cache=pool.cache.key_cache(0))
    query = torch.randn(1, 1, 8)
    got = paged_attention(query, pool.cache.key_cache(0), pool.cache.value_cache(0), md, backend=backend)
    assert (got - contiguous(query, pool.keys[0], pool.values[0], 5)).abs().max() <= TOL


@pytest.mark.parametrize(
    ("tables", "contexts", "queries", "message"),
    [
        ([[0]], [5], None, "need 2 blocks of 4"),
        ([[0]], [3], [4], "query_len <= context_len"),
        ([[0]], [0], None, "query_len <= context_len"),
        ([[0], [1]], [3], None, "batch sizes disagree"),
        ([], [], None, "empty batch"),
    ],
)
def test_inconsistent_batches_are_refused(tables, contexts, queries, message) -> None:
    cache = PagedKVCache(1, 4, B, 1, 8)
    with pytest.raises(InvalidArgument, match=message):
        AttentionMetadata.build(tables, contexts, queries, key_cache=cache.key_cache(0))


def test_query_and_cache_mismatches() -> None:
    pool = Pool([5, 6], 2, 8, torch.float32)
    k, v = pool.cache.key_cache(0), pool.cache.value_cache(0)
    md = AttentionMetadata.build(pool.tables, [5, 6], key_cache=k)
    with pytest.raises(CacheMismatch, match="float64"):
        paged_attention(torch.randn(2, 4, 8, dtype=torch.float64), k, v, md)
    with pytest.raises(CacheMismatch, match="not a multiple of 2 KV heads"):
        paged_attention(torch.randn(2, 3, 8), k, v, md)
    with pytest.raises(CacheMismatch, match=r"expected \[2, n_heads, 8\]"):
        paged_attention(torch.randn(3, 4, 8), k, v, md)
    with pytest.raises(CacheMismatch, match="the metadata was built for"):
        paged_attention(torch.randn(2, 4, 8), k[:-1], v[:-1], md)
    with pytest.raises(CacheMismatch, match="the metadata was built for"):
        paged_attention(torch.randn(2, 4, 4), k[..., :4], v[..., :4], md)
    with pytest.raises(CacheMismatch, match="key/value caches"):
        paged_attention(torch.randn(2, 4, 8), k, v[..., :4], md)


@pytest.mark.parametrize("window", [None, 20])
@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_at_model_shapes(window: int | None, backend: str) -> None:
    """head_dim 128, blocks of 16, 4 query heads per KV head: the shapes the kernel is tuned for."""
    gen = torch.Generator().manual_seed(5)
    lengths, block_size, n_kv, head_dim = [1, 15, 16, 17, 100, 64], 16, 2, 128
    tables = torch.randperm(48, generator=gen)[:42].view(len(lengths), 7)  # 7 blocks each, scattered
    cache = PagedKVCache(1, 48, block_size, n_kv, head_dim)
    cache.kv.normal_(generator=gen)
    query = torch.randn(len(lengths), 4 * n_kv, head_dim, generator=gen)
    md = AttentionMetadata.build(tables, lengths, key_cache=cache.key_cache(0))
    got = paged_attention(
        query, cache.key_cache(0), cache.value_cache(0), md, sliding_window=window, backend=backend
    )
    for i, n in enumerate(lengths):
        k, v = cache.gather(0, tables[i].tolist(), n)
        want = contiguous(query[i : i + 1], k, v, n, sliding_window=window)
        assert (got[i : i + 1] - want).abs().max() <= TOL


def test_unknown_backend_is_refused() -> None:
    pool = Pool([5], 1, 8, torch.float32)
    with pytest.raises(InvalidArgument, match="backend must be one of 'auto', 'torch', 'numba', got 'cuda'"):
        pool.attend(torch.randn(1, 1, 8), [5], None, backend="cuda")


def test_numba_backend_without_numba_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from pagedkv.tensors import attention

    monkeypatch.setattr(attention, "_import_numba_decode", lambda: None)
    pool = Pool([5], 1, 8, torch.float32)
    query = torch.randn(1, 1, 8)
    with pytest.raises(BackendUnavailable, match="needs the numba package"):
        pool.attend(query, [5], None, backend="numba")
    auto = pool.attend(query, [5], None, backend="auto")  # falls back to the torch path
    assert torch.equal(auto, pool.attend(query, [5], None, backend="torch"))


@pytest.mark.skipif(
    not HAS_NUMBA, reason="numba is not installed (optional decode backend: pip install numba)"
)
def test_numba_backend_refuses_dtypes_it_does_not_handle_and_auto_falls_back() -> None:
    pool = Pool([5, 9], 1, 8, torch.bfloat16)
    query = torch.randn(2, 2, 8, dtype=torch.bfloat16)
    with pytest.raises(BackendUnavailable, match=r"float32 and float64, the tensors are torch.bfloat16"):
        pool.attend(query, [5, 9], None, backend="numba")
    auto = pool.attend(query, [5, 9], None, backend="auto")
    assert torch.equal(auto, pool.attend(query, [5, 9], None, backend="torch"))


@NO_NUMBA
def test_numba_backend_leaves_torch_thread_count_alone() -> None:
    pool = Pool([5, 9], 1, 8, torch.float32)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pool.attend(torch.randn(2, 2, 8), [5, 9], None, backend="numba")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
