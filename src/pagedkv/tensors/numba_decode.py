"""Decode attention that reads K/V blocks in place: a Numba kernel for the CPU (optional backend).

Why it exists: decode is memory-bound (every K/V number is used by only `n_heads / n_kv_heads`
queries). With plain PyTorch ops the paged path must copy each block into a buffer before a matmul
can read it, so it pays for the copy on top of the arithmetic. This kernel walks the block table and
computes on each (block, KV head) tile where it lies in the pool, as vLLM's CUDA kernel does.

Work split: one (sequence, KV head) pair per parallel iteration. A pair's `n_rep` query rows
(the query heads that share the KV head) are scored against each `[block_size, head_dim]` key tile,
folded into running softmax statistics (max, sum: the online softmax of FlashAttention), and the
value tile is accumulated with the same probabilities.

Prefetching: tiles of a block table are scattered over the pool, so the hardware prefetcher, which
follows addresses, not the table, streams a tile only after it has missed on it. While block j is
used, the kernel requests block j + 1 a few key rows at a time from inside the score loop (spread out:
one burst of 256 requests at the start of a block would wait on the core's ~16 line-fill buffers
and stall the arithmetic), and touches the first two lines of each 4 KiB of block j + 2, so the
L2 streamer (which works within 4 KiB pages) is already running there when its turn comes.
Measured on a 2-core AVX-512 CPU (decode, batch 32, 2k tokens): 36 ms with a burst for block
j + 1, 31 ms spread, 30 ms spread plus the page touches; contiguous SDPA on the same K/V: 26 ms.

Invariant: the result is exact softmax attention over the first `context_lens[i]` tokens of each
block table (only the window's keys when a sliding window is given); only the summation order
differs from contiguous SDPA. The caller (`paged_attention`) has validated the block tables against
the pool, so the kernel reads no address outside it.

Arithmetic: `fastmath={"reassoc", "contract"}` only, so the compiler may vectorise the dot products
(reassociate sums, fuse multiply-adds) but keeps IEEE infinities and NaNs (the running max starts
at -inf). Without it the dot products run as one scalar chain and the kernel is ~1.5x slower.
Compiled once per dtype (float32, float64) and cached on disk (`cache=True`).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

SUPPORTED_DTYPES = (torch.float32, torch.float64)


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU to bring the cache line of `array.flat[index]` (C-contiguous array) into cache."""
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32])
        prefetch = builder.module.declare_intrinsic("llvm.prefetch", [byte_ptr], fnty)
        address = builder.bitcast(builder.gep(data, [args[1]]), byte_ptr)
        builder.call(prefetch, [address, i32(0), i32(3), i32(1)])  # read, keep in all levels, data
        return context.get_dummy_value()

    return types.void(array, index), codegen


@numba.njit(inline="always")
def _prefetch_rows(key_cache, value_cache, start, stop, line):
    """Prefetch elements [start, stop) of both caches, one request per cache line."""
    for c in range(start, stop, line):
        _prefetch(key_cache, c)
        _prefetch(value_cache, c)


@numba.njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
def _decode_kernel(q, key_cache, value_cache, rows, block_table, context_lens, window, scale, out):
    # q, out: [num_query_tokens, n_heads, head_dim]; sequence i's query is row rows[i]
    # key_cache, value_cache: [num_blocks, n_kv_heads, block_size, head_dim]
    # block_table: [seqs, >= blocks needed] int64; context_lens: [seqs] int64; window: 0 = none
    n_heads, head_dim = q.shape[1], q.shape[2]
    n_kv_heads, block_size = key_cache.shape[1], key_cache.shape[2]
    n_rep = n_heads // n_kv_heads
    tile = block_size * head_dim
    line, page = 64 // q.itemsize, 4096 // q.itemsize  # elements per cache line, per 4 KiB
    for pair in numba.prange(rows.shape[0] * n_kv_heads):
        s, h = pair // n_kv_heads, pair % n_kv_heads
        acc = np.zeros((n_rep, head_dim), dtype=q.dtype)  # unnormalised output rows
        row_max = np.full(n_rep, -np.inf, dtype=q.dtype)
        row_sum = np.zeros(n_rep, dtype=q.dtype)
        scores = np.empty((n_rep, block_size), dtype=q.dtype)  # one block's scores, then probabilities
        qs = np.empty((n_rep, head_dim), dtype=q.dtype)
        for r in range(n_rep):
            for d in range(head_dim):
                qs[r, d] = q[rows[s], h * n_rep + r, d] * scale
        length = context_lens[s]
        first = max(length - window, 0) if window > 0 else 0
        num_blocks = (length + block_size - 1) // block_size
        for j in range(first // block_size, num_blocks):
            # while block j is used, block j + 1 is requested a few key rows at a time (inside the
            # score loop below), and block j + 2 gets its first lines of each page touched
            ahead = (block_table[s, min(j + 1, num_blocks - 1)] * n_kv_heads + h) * tile
            further = (block_table[s, min(j + 2, num_blocks - 1)] * n_kv_heads + h) * tile
            for c in range(0, tile, page):
                _prefetch_rows(key_cache, value_cache, further + c, further + c + 2 * line, line)
            keys = key_cache[block_table[s, j], h]  # [block_size, head_dim], in place
            values = value_cache[block_table[s, j], h]
            t0, t1 = max(first - j * block_size, 0), min(length - j * block_size, block_size)
            t4 = t0 + (t1 - t0) // 4 * 4
            # scores = qs @ keys^T, four keys at a time: four independent sums share each query load
            # (one sum at a time is bound by the latency of its adds)
            if n_rep == 4:
                # the common GQA case (e.g. 32 query heads over 8 KV heads): each key row is loaded
                # once for all four query rows, two keys at a time (eight independent sums)
                q0, q1, q2, q3 = qs[0], qs[1], qs[2], qs[3]
                for t in range(t0, t4, 2):
                    k0, k1 = keys[t], keys[t + 1]
                    _prefetch_rows(
                        key_cache, value_cache, ahead + t * head_dim, ahead + (t + 2) * head_dim, line
                    )
                    a0 = q0[0] * k0[0]
                    a1 = q1[0] * k0[0]
                    a2 = q2[0] * k0[0]
                    a3 = q3[0] * k0[0]
                    b0 = q0[0] * k1[0]
                    b1 = q1[0] * k1[0]
                    b2 = q2[0] * k1[0]
                    b3 = q3[0] * k1[0]
                    for d in range(1, head_dim):
                        a0 += q0[d] * k0[d]
                        a1 += q1[d] * k0[d]
                        a2 += q2[d] * k0[d]
                        a3 += q3[d] * k0[d]
                        b0 += q0[d] * k1[d]
                        b1 += q1[d] * k1[d]
                        b2 += q2[d] * k1[d]
                        b3 += q3[d] * k1[d]
                    scores[0, t], scores[1, t], scores[2, t], scores[3, t] = a0, a1, a2, a3
                    scores[0, t + 1], scores[1, t + 1], scores[2, t + 1], scores[3, t + 1] = b0, b1, b2, b3
                for t in range(t4, t1):
                    for r in range(n_rep):
                        x = qs[r, 0] * keys[t, 0]
                        for d in range(1, head_dim):
                            x += qs[r, d] * keys[t, d]
                        scores[r, t] = x
            else:
                for r in range(n_rep):
                    qr = qs[r]
                    for t in range(t0, t4, 4):
                        k0, k1, k2, k3 = keys[t], keys[t + 1], keys[t + 2], keys[t + 3]
                        if r == 0:
                            _prefetch_rows(
                                key_cache, value_cache, ahead + t * head_dim, ahead + (t + 4) * head_dim, line
                            )
                        x0, x1, x2, x3 = qr[0] * k0[0], qr[0] * k1[0], qr[0] * k2[0], qr[0] * k3[0]
                        for d in range(1, head_dim):
                            x0 += qr[d] * k0[d]
                            x1 += qr[d] * k1[d]
                            x2 += qr[d] * k2[d]
                            x3 += qr[d] * k3[d]
                        scores[r, t], scores[r, t + 1], scores[r, t + 2], scores[r, t + 3] = x0, x1, x2, x3
                    for t in range(t4, t1):
                        x = qr[0] * keys[t, 0]
                        for d in range(1, head_dim):
                            x += qr[d] * keys[t, d]
                        scores[r, t] = x
            # online softmax: fold the block into (row_max, row_sum), rescaling acc when the max grows
            for r in range(n_rep):
                block_max = row_max[r]
                for t in range(t0, t1):
                    block_max = max(block_max, scores[r, t])
                total = row_sum[r]
                a, p = acc[r], scores[r]
                if block_max > row_max[r]:
                    alpha = math.exp(row_max[r] - block_max)  # 0 for the first block (row_max = -inf)
                    row_max[r] = block_max
                    total *= alpha
                    for d in range(head_dim):
                        a[d] *= alpha
                for t in range(t0, t1):
                    p[t] = math.exp(p[t] - block_max)
                    total += p[t]
                row_sum[r] = total
                # acc += p @ values, four value rows per pass over acc (a quarter of its loads/stores)
                for t in range(t0, t4, 4):
                    v0, v1, v2, v3 = values[t], values[t + 1], values[t + 2], values[t + 3]
                    p0, p1, p2, p3 = p[t], p[t + 1], p[t + 2], p[t + 3]
                    for d in range(head_dim):
                        a[d] += p0 * v0[d] + p1 * v1[d] + p2 * v2[d] + p3 * v3[d]
                for t in range(t4, t1):
                    for d in range(head_dim):
                        a[d] += p[t] * values[t, d]
        for r in range(n_rep):
            inv = 1 / row_sum[r]
            for d in range(head_dim):
                out[rows[s], h * n_rep + r, d] = acc[r, d] * inv


def supports(query: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor) -> str | None:
    """Why this kernel cannot serve these tensors, or None when it can."""
    if query.device.type != "cpu":
        return f"it runs on the CPU, the tensors are on {query.device}"
    if query.dtype not in SUPPORTED_DTYPES:
        return f"it supports float32 and float64, the tensors are {query.dtype}"
    if not (key_cache.is_contiguous() and value_cache.is_contiguous()):
        return "it needs contiguous key/value caches (PagedKVCache.key_cache(layer) is)"
    return None


def decode(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    rows: torch.Tensor,
    block_table: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None,
    out: torch.Tensor,
) -> None:
    """Write rows `rows` of `out`: decode attention of those query rows over the paged K/V.

    query, out: [num_query_tokens, n_heads, head_dim] (out contiguous); sequence i's query is row
    rows[i]; key_cache, value_cache: [num_blocks, n_kv_heads, block_size, head_dim] (contiguous,
    validated against block_table by the caller); block_table: [seqs, blocks] int64; context_lens:
    [seqs] int64. Uses as many threads as torch's intra-op pool, so both backends get the same cores.
    """
    threads = torch.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    _decode_kernel(
        query.detach().contiguous().numpy(),
        key_cache.detach().numpy(),
        value_cache.detach().numpy(),
        rows.numpy(),
        block_table.numpy(),
        context_lens.numpy(),
        sliding_window or 0,
        float(scale),
        out.detach().numpy(),
    )
    if torch.get_num_threads() != threads:
        # numba's OpenMP pool and torch can share one libgomp, and starting the pool resets its
        # thread count: give torch back the count its user chose
        torch.set_num_threads(threads)
