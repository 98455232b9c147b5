"""Replay a seeded serving trace through `BlockManager` and report manager time and memory.

Trace (issue 2): 1000 requests, prompts uniform [200, 4000] tokens, outputs uniform [50, 500],
block size 16, a pool of 100,000 blocks, at most 256 running at once; every step, every running
sequence appends one token (one `append_batch` call, or one `append` per sequence with
--per-sequence); sequences are freed when done. With prefix caching on, prompts and generated
tokens are random token ids, so the cache is exercised but seldom hits.

    python benchmarks/bench_block_manager.py [--per-sequence] [--repeat 3]

Manager time excludes building the workload; bytes per block come from `tracemalloc` in a
separate run: the pool (the manager just built) and the peak of everything the manager
allocates during the replay, divided by the pool's block count.
"""

from __future__ import annotations

import argparse
import random
import time
import tracemalloc
from collections import deque
from typing import NamedTuple

from pagedkv import BlockManager

NUM_REQUESTS = 1000
NUM_BLOCKS = 100_000
BLOCK_SIZE = 16
MAX_RUNNING = 256
VOCAB = 32_000


class Request(NamedTuple):
    prompt: list[int]
    output: list[int]


def make_trace(seed: int = 0) -> list[Request]:
    rng = random.Random(seed)
    trace = []
    for _ in range(NUM_REQUESTS):
        prompt_len, output_len = rng.randint(200, 4000), rng.randint(50, 500)
        trace.append(
            Request(
                [rng.randrange(VOCAB) for _ in range(prompt_len)],
                [rng.randrange(VOCAB) for _ in range(output_len)],
            )
        )
    return trace


def replay(trace: list[Request], prefix_caching: bool, per_sequence: bool) -> tuple[float, int, int]:
    """Returns (seconds spent inside manager calls, manager operations, steps).

    Operations count `can_allocate`, `allocate`, `free` and every appended token.
    """
    bm = BlockManager(NUM_BLOCKS, BLOCK_SIZE, enable_prefix_caching=prefix_caching)
    waiting = deque(range(len(trace)))
    running: list[int] = []
    generated = [0] * len(trace)
    clock = time.perf_counter
    spent = 0.0
    ops = steps = 0
    while waiting or running:
        steps += 1
        while waiting and len(running) < MAX_RUNNING:
            rid = waiting[0]
            prompt = trace[rid].prompt if prefix_caching else len(trace[rid].prompt)
            t0 = clock()
            admitted = bm.can_allocate(prompt) and bm.allocate(rid, prompt) is not None
            spent += clock() - t0
            ops += 2
            if not admitted:
                break
            running.append(rid)
            waiting.popleft()
        tokens = [trace[rid].output[generated[rid]] for rid in running]
        t0 = clock()
        if per_sequence and prefix_caching:
            for rid, token in zip(running, tokens, strict=True):
                bm.append(rid, [token])
        elif per_sequence:
            for rid in running:
                bm.append(rid)
        else:
            bm.append_batch(running, tokens if prefix_caching else None)
        spent += clock() - t0
        ops += len(running)
        done = []
        for rid in running:
            generated[rid] += 1
            if generated[rid] == len(trace[rid].output):
                done.append(rid)
        t0 = clock()
        for rid in done:
            bm.free(rid)
        spent += clock() - t0
        ops += len(done)
        if done:
            finished = set(done)
            running = [rid for rid in running if rid not in finished]
    return spent, ops, steps


def bytes_per_block(trace: list[Request], prefix_caching: bool) -> tuple[float, float]:
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    bm = BlockManager(NUM_BLOCKS, BLOCK_SIZE, enable_prefix_caching=prefix_caching)
    pool = tracemalloc.get_traced_memory()[0] - base
    del bm
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    replay(trace[:400], prefix_caching, per_sequence=False)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return pool / NUM_BLOCKS, peak / NUM_BLOCKS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-sequence", action="store_true", help="append() per sequence, not append_batch")
    parser.add_argument("--repeat", type=int, default=3, help="replays per setting; the best is reported")
    args = parser.parse_args()
    trace = make_trace()
    api = "append per sequence" if args.per_sequence else "append_batch"
    print(f"trace: {NUM_REQUESTS} requests, pool {NUM_BLOCKS} blocks of {BLOCK_SIZE}, {api}")
    for prefix_caching in (False, True):
        best = min(replay(trace, prefix_caching, args.per_sequence) for _ in range(args.repeat))
        seconds, ops, steps = best
        pool, peak = bytes_per_block(trace, prefix_caching)
        print(
            f"prefix caching {'on ' if prefix_caching else 'off'}: {seconds:.3f} s manager time, "
            f"{ops / seconds:,.0f} ops/s ({ops} ops, {steps} steps); "
            f"bytes/block: pool {pool:.1f}, peak during replay {peak:.1f}"
        )


if __name__ == "__main__":
    main()
