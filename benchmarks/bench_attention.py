"""Paged decode attention vs contiguous SDPA at equal shapes.

Every sequence of the batch has `context` tokens of K/V. The contiguous baseline holds them as
`[batch, n_kv_heads, context, head_dim]` and calls `scaled_dot_product_attention` (the best of
`enable_gqa=True` and folding the query heads of a KV head into the query axis). The paged side
holds them in a `PagedKVCache` through block tables that are a random permutation of the pool,
and calls `paged_attention` (metadata built once, as an engine does once per step for all layers)
with each decode backend: "torch" (plain PyTorch, split-K) and "numba" (the kernel that reads
blocks in place; left out when numba is not installed). Reported: median milliseconds, the ratio
paged / contiguous per backend (target <= 1.3), the max abs difference of the outputs, and the
time of the first numba call in the process (compilation, or loading it from numba's disk cache).

    .venv/bin/python benchmarks/bench_attention.py                 # batch 32, context 1k/2k/4k, 32/8 heads
    .venv/bin/python benchmarks/bench_attention.py --contexts 512 --reps 5 --backends torch
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from pagedkv.tensors import AttentionMetadata, PagedKVCache, paged_attention
from pagedkv.tensors.attention_metadata import WORKSPACE_BYTES


def median_ms(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median wall time of each function; the functions take turns so load drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(reps):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def run_context(args: argparse.Namespace, context: int, gen: torch.Generator) -> dict[str, dict[str, float]]:
    batch, heads, kv_heads, head_dim, block = (
        args.batch,
        args.heads,
        args.kv_heads,
        args.head_dim,
        args.block_size,
    )
    blocks_per_seq = -(-context // block)
    num_blocks = batch * blocks_per_seq
    cache = PagedKVCache(1, num_blocks, block, kv_heads, head_dim, dtype=torch.float32)
    cache.kv.normal_(generator=gen)
    tables = torch.randperm(num_blocks, generator=gen).view(batch, blocks_per_seq)
    # the same K/V laid out contiguously: [batch, n_kv_heads, context, head_dim]
    # (cache[tables]: [batch, blocks_per_seq, n_kv_heads, block_size, head_dim])
    keys = (
        cache.key_cache(0)[tables]
        .transpose(1, 2)
        .reshape(batch, kv_heads, -1, head_dim)[:, :, :context]
        .contiguous()
    )
    values = (
        cache.value_cache(0)[tables]
        .transpose(1, 2)
        .reshape(batch, kv_heads, -1, head_dim)[:, :, :context]
        .contiguous()
    )
    query = torch.randn(batch, heads, head_dim, generator=gen)

    def contiguous_gqa() -> torch.Tensor:
        return F.scaled_dot_product_attention(query.unsqueeze(2), keys, values, enable_gqa=True)

    folded = query.view(batch, kv_heads, heads // kv_heads, head_dim)

    def contiguous_folded() -> torch.Tensor:
        return F.scaled_dot_product_attention(folded, keys, values)

    started = time.perf_counter()
    metadata = AttentionMetadata.build(
        tables,
        [context] * batch,
        key_cache=cache.key_cache(0),
        workspace_bytes=args.workspace_mib * 2**20,
        decode_chunk_bytes=args.decode_chunk_kib * 2**10 or None,
    )
    metadata_ms = 1e3 * (time.perf_counter() - started)

    def paged(backend: str) -> Callable[[], torch.Tensor]:
        return lambda: paged_attention(
            query, cache.key_cache(0), cache.value_cache(0), metadata, backend=backend
        )

    want = contiguous_gqa().squeeze(2)
    err = {backend: (paged(backend)() - want).abs().max().item() for backend in args.backends}
    fns = {"gqa": contiguous_gqa, "folded": contiguous_folded}
    fns.update({backend: paged(backend) for backend in args.backends})
    ms = median_ms(fns, args.reps)
    return {
        backend: {
            "ms": ms[backend],
            "ratio": ms[backend] / min(ms["gqa"], ms["folded"]),
            "err": err[backend],
            "contiguous": min(ms["gqa"], ms["folded"]),
            "metadata": metadata_ms,
        }
        for backend in args.backends
    }


def first_numba_call_s() -> float:
    """Seconds of the process's first numba decode call: JIT compilation, or a load from the disk cache."""
    cache = PagedKVCache(1, 2, 16, 1, 128)
    metadata = AttentionMetadata.build([[0, 1]], [20], key_cache=cache.key_cache(0))
    query = torch.zeros(1, 4, 128)
    started = time.perf_counter()
    paged_attention(query, cache.key_cache(0), cache.value_cache(0), metadata, backend="numba")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--workspace-mib", type=int, default=WORKSPACE_BYTES // 2**20)
    parser.add_argument(
        "--decode-chunk-kib", type=int, default=0, help="K tiles per decode chunk (0: the library's default)"
    )
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    has_numba = importlib.util.find_spec("numba") is not None
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=["torch", "numba"],
        default=["torch", "numba"] if has_numba else ["torch"],
        help="decode backends of paged_attention to time (numba threads follow torch's)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    print(
        f"decode, batch {args.batch}, {args.heads} query heads / {args.kv_heads} KV heads, "
        f"head_dim {args.head_dim}, "
        f"block_size {args.block_size}, float32, {torch.get_num_threads()} threads, median of {args.reps}"
    )
    if "numba" in args.backends:
        print(f"first numba call (compile, or load from numba's cache): {first_numba_call_s():.2f} s")
    print(
        f"{'context':>8} {'backend':>8} {'contiguous ms':>14} {'paged ms':>9} {'ratio':>6} "
        f"{'metadata ms':>12} {'max abs err':>12}"
    )
    for context in args.contexts:
        for backend, r in run_context(args, context, gen).items():
            print(
                f"{context:>8} {backend:>8} {r['contiguous']:>14.2f} {r['ms']:>9.2f} {r['ratio']:>6.2f} "
                f"{r['metadata']:>12.2f} {r['err']:>12.1e}"
            )


if __name__ == "__main__":
    main()
