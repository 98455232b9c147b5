"""Replay seeded serving traces through `BlockManager` (and nano-vllm's) as an engine drives it.

Three traces, 1000 requests each, outputs U[50, 500] tokens of random ids, block size 16, at most 256
sequences running:
- ``default``: prompts U[200, 4000] random token ids, a pool of 100,000 blocks (issue 2's trace);
- ``shared-prefix``: every prompt starts with one of 32 system prompts of U[100, 1500] tokens, then
  U[50, 2500] tokens of its own; a pool of 100,000 blocks;
- ``shared-prefix-20k``: the same requests in a pool of 20,000 blocks, so admissions are refused,
  running sequences are preempted and cached blocks are evicted.

The engine loop (vLLM V1's and nano-vllm's policy): every step admits waiting requests first-come
first-served while they fit (``can_allocate`` then ``allocate``; the first refusal ends admission for
the step), then every running sequence gets one token (``append(seq_id, [token])``, the default
per-sequence API, or one ``append_batch`` with ``--api batch``). When the pool cannot hold a token,
the most recently admitted sequence is preempted (freed, and put back at the head of the queue with
its prompt and the tokens it generated so far, to be recomputed). Finished sequences are freed.

    python benchmarks/bench_block_manager.py [--trace NAME ...] [--api batch] [--rounds 3]
        [--nano-vllm PATH]

Manager time is the CPU time (`time.process_time`) spent inside manager calls, the driver's loop over
the running sequences included; building the trace is not. With ``--nano-vllm PATH`` (a checkout of
github.com/GeeeekExplorer/nano-vllm, kept outside this repository; it needs ``xxhash`` and ``numpy``)
its ``BlockManager`` replays the identical trace in the same process, in interleaved rounds, through
the calls its scheduler makes (``can_allocate``/``allocate``/``hash_blocks`` to admit,
``can_append``/``may_append``/``hash_blocks`` per token, ``deallocate``); the token bookkeeping of
nano-vllm's ``Sequence`` is not counted as its manager time. nano-vllm always caches prefixes, so the
ratio is taken against pagedkv with prefix caching on. The best round of each is reported.

Operations: two per admission attempt, one per appended token, one per free. Hashes: block hashes
computed (pagedkv's `stats.hashed_blocks`; nano-vllm's ``compute_hash`` calls, counted in a separate
untimed replay). Bytes per block come from `tracemalloc`, counting what the manager's own package
allocated: the pool as built, and the peak (sampled every 20 steps) while it replays the trace's first
400 requests, divided by the pool's blocks (nano-vllm's pool only: with a Python object a block, each
sample would take seconds).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import math
import random
import sys
import time
import tracemalloc
import types
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pagedkv
from pagedkv import BlockManager, OutOfBlocks

NUM_REQUESTS = 1000
BLOCK_SIZE = 16
MAX_RUNNING = 256
VOCAB = 32_000
NUM_SYSTEM_PROMPTS = 32
NANO = "nano-vllm BlockManager"
SAMPLE_EVERY = 20
"""Steps between two samples of the manager's memory (bytes per block)."""


class Request(NamedTuple):
    prompt: list[int]
    output: list[int]


class Trace(NamedTuple):
    name: str
    num_blocks: int
    requests: list[Request]


class Result(NamedTuple):
    seconds: float
    ops: int
    steps: int
    refused: int
    preemptions: int


def make_requests(shared_prefix: bool, seed: int = 0) -> list[Request]:
    """Without a shared prefix: issue 2's trace, sample for sample."""
    rng = random.Random(seed)

    def ids(count: int) -> list[int]:
        return [rng.randrange(VOCAB) for _ in range(count)]

    systems = [ids(rng.randint(100, 1500)) for _ in range(NUM_SYSTEM_PROMPTS)] if shared_prefix else []
    requests = []
    for _ in range(NUM_REQUESTS):
        if shared_prefix:
            prompt_len, output_len = rng.randint(50, 2500), rng.randint(50, 500)
            prompt = rng.choice(systems) + ids(prompt_len)
        else:
            prompt_len, output_len = rng.randint(200, 4000), rng.randint(50, 500)
            prompt = ids(prompt_len)
        requests.append(Request(prompt, ids(output_len)))
    return requests


def make_traces() -> dict[str, Trace]:
    default, shared = make_requests(shared_prefix=False), make_requests(shared_prefix=True)
    return {
        "default": Trace("default", 100_000, default),
        "shared-prefix": Trace("shared-prefix", 100_000, shared),
        "shared-prefix-20k": Trace("shared-prefix-20k", 20_000, shared),
    }


# ---------------------------------------------------------------------- the managers, as an engine calls them
class PagedKV:
    """pagedkv's `BlockManager`: one `append(seq_id, [token])` per sequence, or one `append_batch`."""

    def __init__(self, num_blocks: int, prefix_caching: bool, batch: bool) -> None:
        self.bm = BlockManager(num_blocks, BLOCK_SIZE, enable_prefix_caching=prefix_caching)
        self.batch = batch

    def admit(self, rid: int, tokens: list[int]) -> bool:
        bm = self.bm
        if not bm.can_allocate(tokens):
            return False
        bm.allocate(rid, tokens)
        return True

    def handle(self, rid: int) -> int:
        """What the engine passes for a running request: its sequence id."""
        return rid

    def decode(self, running: list[Any], tokens: list[int], start: int) -> int:
        """Append tokens[i] to running[i] from `start` on; returns where the pool ran out (or the end)."""
        if self.batch:
            try:
                self.bm.append_batch(running[start:], tokens[start:])
            except OutOfBlocks:
                return start
            return len(running)
        append = self.bm.append
        i = start
        try:
            for i in range(start, len(running)):
                append(running[i], [tokens[i]])
        except OutOfBlocks:
            return i
        return len(running)

    def prepare(self, requests: list[Request]) -> None:
        pass

    def publish(self, running: list[Any]) -> None:
        pass

    def finish_step(self, running: list[Any], tokens: list[int]) -> None:
        pass

    def free(self, handle: Any) -> None:
        self.bm.free(handle)

    def hashes(self) -> int:
        return getattr(self.bm.stats, "hashed_blocks", -1)


class NanoVLLM:
    """nano-vllm's `BlockManager` driven through its scheduler's calls (either of its two APIs).

    Since its chunked-prefill rework, ``can_allocate(seq)`` returns the cached block count (-1: no room),
    ``allocate(seq, n)`` takes it, and ``hash_blocks(seq)`` publishes the blocks a step filled; before
    it, ``allocate(seq)`` and ``may_append(seq)`` hashed as they went.
    """

    def __init__(self, module: Any, sequence: Any, num_blocks: int) -> None:
        self.bm = module.BlockManager(num_blocks, BLOCK_SIZE)
        self.sequence = sequence
        self.seqs: dict[int, Any] = {}
        self.chunked = "num_cached_blocks" in inspect.signature(module.BlockManager.allocate).parameters

    def prepare(self, requests: list[Request]) -> None:
        """The engine's Sequence objects (not manager time)."""
        self.seqs = {rid: self.sequence(request.prompt) for rid, request in enumerate(requests)}

    def admit(self, rid: int, tokens: list[int]) -> bool:
        bm, seq = self.bm, self.seqs[rid]
        if not self.chunked:
            if not bm.can_allocate(seq):
                return False
            bm.allocate(seq)
            return True
        cached = bm.can_allocate(seq)
        if cached == -1:
            return False
        bm.allocate(seq, cached)
        seq.num_scheduled_tokens = seq.num_tokens - seq.num_cached_tokens
        bm.hash_blocks(seq)
        seq.num_cached_tokens, seq.num_scheduled_tokens = seq.num_tokens, 0
        return True

    def handle(self, rid: int) -> Any:
        """What nano-vllm's scheduler holds for a running request: its Sequence."""
        return self.seqs[rid]

    def decode(self, running: list[Any], tokens: list[int], start: int) -> int:
        """KV slots for each sequence's last token (a just-admitted one has none to write yet)."""
        bm = self.bm
        for i in range(start, len(running)):
            seq = running[i]
            if seq.is_prefill:
                continue
            if not bm.can_append(seq):
                return i
            bm.may_append(seq)
        return len(running)

    def publish(self, running: list[Any]) -> None:
        """After the step's forward pass: hash the blocks it filled (the chunked-prefill API)."""
        if not self.chunked:
            return
        bm = self.bm
        for seq in running:
            if not seq.is_prefill:
                bm.hash_blocks(seq)

    def finish_step(self, running: list[Any], tokens: list[int]) -> None:
        """The engine's side (not manager time): record the sampled tokens."""
        for seq, token in zip(running, tokens, strict=True):
            if not seq.is_prefill:
                seq.num_cached_tokens += 1
            seq.is_prefill = False
            seq.num_scheduled_tokens = 1
            seq.append_token(token)

    def free(self, seq: Any) -> None:
        self.bm.deallocate(seq)
        seq.is_prefill, seq.num_scheduled_tokens = True, 0

    def hashes(self) -> int:
        return -1  # counted in a separate, untimed replay (see count_nano_hashes)


def load_nano_vllm(path: Path) -> tuple[Any, Any]:
    """nano-vllm's block_manager and Sequence, without importing its package (torch, transformers)."""
    package = path / "nanovllm"
    if not (package / "engine" / "block_manager.py").is_file():
        raise SystemExit(
            f"--nano-vllm {path}: no nanovllm/engine/block_manager.py there; pass a nano-vllm checkout"
        )
    stub = types.ModuleType("nanovllm")
    stub.__path__ = [str(package)]
    sys.modules["nanovllm"] = stub
    try:
        module = importlib.import_module("nanovllm.engine.block_manager")
        sequence = importlib.import_module("nanovllm.engine.sequence").Sequence
    except ImportError as exc:
        raise SystemExit(f"--nano-vllm {path}: {exc} (nano-vllm needs xxhash and numpy)") from None
    sequence.block_size = BLOCK_SIZE
    return module, sequence


# ---------------------------------------------------------------------- the engine loop
class EngineLoop:
    """The scheduler both managers are driven by (see the module docstring); counts what it did."""

    def __init__(self, manager: Any, requests: list[Request]) -> None:
        self.manager, self.requests = manager, requests
        self.waiting = deque(range(len(requests)))
        self.waiting_tokens: dict[int, list[int]] = {}  # a waiting request's tokens, kept across retries
        self.running: list[int] = []
        self.handles: list[Any] = []  # what the engine passes the manager for each running request
        self.generated = [0] * len(requests)
        self.spent = 0.0
        self.ops = self.steps = self.refused = self.preemptions = 0

    def run(self, on_step: Callable[[int], None] | None = None) -> Result:
        while self.waiting or self.running:
            self.steps += 1
            self.admit()
            self.decode()
            self.finish()
            if on_step is not None:
                on_step(self.steps)
        return Result(self.spent, self.ops, self.steps, self.refused, self.preemptions)

    def timed(self, call: Callable[..., Any], *args: Any) -> Any:
        t0 = time.process_time()
        result = call(*args)
        self.spent += time.process_time() - t0
        return result

    def admit(self) -> None:
        """First come, first served while the head of the queue fits."""
        while self.waiting and len(self.running) < MAX_RUNNING:
            rid = self.waiting[0]
            tokens = self.waiting_tokens.get(rid)
            if tokens is None:
                request = self.requests[rid]
                tokens = self.waiting_tokens[rid] = request.prompt + request.output[: self.generated[rid]]
            self.ops += 2
            if not self.timed(self.manager.admit, rid, tokens):
                self.refused += 1
                return
            del self.waiting_tokens[rid]
            self.waiting.popleft()
            self.running.append(rid)
            self.handles.append(self.manager.handle(rid))

    def decode(self) -> None:
        """One token for every running sequence; preempt the latest admitted when the pool runs out."""
        tokens = [self.requests[rid].output[self.generated[rid]] for rid in self.running]
        start = 0
        while True:
            start = self.timed(self.manager.decode, self.handles, tokens, start)
            if start == len(self.running):
                break
            self.preemptions += 1
            self.ops += 1
            self.waiting.appendleft(self.running.pop())
            tokens.pop()
            self.timed(self.manager.free, self.handles.pop())
        self.timed(self.manager.publish, self.handles)
        self.manager.finish_step(self.handles, tokens)
        self.ops += len(self.running)

    def finish(self) -> None:
        for rid in self.running:
            self.generated[rid] += 1
        done = [
            i for i, rid in enumerate(self.running) if self.generated[rid] == len(self.requests[rid].output)
        ]
        if not done:
            return
        self.timed(lambda: [self.manager.free(self.handles[i]) for i in done])
        self.ops += len(done)
        finished = set(done)
        self.running = [rid for i, rid in enumerate(self.running) if i not in finished]
        self.handles = [h for i, h in enumerate(self.handles) if i not in finished]


def replay(manager: Any, requests: list[Request], on_step: Callable[[int], None] | None = None) -> Result:
    """Serve every request to the end; returns manager CPU time and what the run did."""
    return EngineLoop(manager, requests).run(on_step)


def timed(make: Callable[[], Any], requests: list[Request]) -> tuple[Result, Any]:
    manager = make()
    manager.prepare(requests)
    gc.collect()
    gc.disable()
    try:
        return replay(manager, requests), manager
    finally:
        gc.enable()


def bytes_per_block(
    make: Callable[[int], Any], package: Path, trace: Trace, peak: bool
) -> tuple[float, float]:
    """(pool, peak) per block of what the manager's own code holds, from tracemalloc (peak: NaN if not asked).

    Only allocations made by code in `package` count (the engine's lists are not the manager's). The
    pool is measured as built; the peak is sampled every `SAMPLE_EVERY` steps of a replay of the
    trace's first 400 requests and added to the pool.
    """
    own = [tracemalloc.Filter(True, str(package / "*"))]

    def held() -> int:
        return sum(
            stat.size for stat in tracemalloc.take_snapshot().filter_traces(own).statistics("filename")
        )

    tracemalloc.start()
    try:
        manager = make(trace.num_blocks)
        pool = held()
        if not peak:
            return pool / trace.num_blocks, math.nan
        manager.prepare(trace.requests[:400])
        base = most = held()

        def sample(step: int) -> None:
            nonlocal most
            if step % SAMPLE_EVERY == 0:
                most = max(most, held())

        replay(manager, trace.requests[:400], sample)
    finally:
        tracemalloc.stop()
    return pool / trace.num_blocks, (pool + most - base) / trace.num_blocks


def count_nano_hashes(module: Any, sequence: Any, trace: Trace) -> int:
    """compute_hash calls in one untimed replay (wrapping it in the timed runs would slow nano-vllm)."""
    original = module.BlockManager.__dict__["compute_hash"]
    count = 0

    def counting(cls: Any, *args: Any) -> Any:
        nonlocal count
        count += 1
        return original.__func__(cls, *args)

    module.BlockManager.compute_hash = classmethod(counting)
    try:
        nano = NanoVLLM(module, sequence, trace.num_blocks)
        nano.prepare(trace.requests)
        replay(nano, trace.requests)
    finally:
        module.BlockManager.compute_hash = original
    return count


# ---------------------------------------------------------------------- report
class Row(NamedTuple):
    label: str
    rounds: list[Result]
    hashes: int
    pool: float
    peak: float

    @property
    def best(self) -> Result:
        return min(self.rounds, key=lambda r: r.seconds)


PAGED_ON, PAGED_OFF = "pagedkv, prefix caching on", "pagedkv, prefix caching off"


def bench_trace(trace: Trace, rounds: int, batch: bool, nano: tuple[Any, Any] | None) -> list[Row]:
    makers: dict[str, Callable[[int], Any]] = {
        PAGED_ON: lambda n: PagedKV(n, True, batch),
        PAGED_OFF: lambda n: PagedKV(n, False, batch),
    }
    packages = dict.fromkeys(makers, Path(pagedkv.__file__).parent)
    if nano is not None:
        module, sequence = nano
        makers[NANO] = lambda n: NanoVLLM(module, sequence, n)
        packages[NANO] = Path(module.__file__).parents[1]
    results: dict[str, list[Result]] = {label: [] for label in makers}
    hashes: dict[str, int] = {}
    for r in range(rounds):
        for label in makers if r % 2 == 0 else reversed(makers):
            result, manager = timed(lambda label=label: makers[label](trace.num_blocks), trace.requests)
            results[label].append(result)
            hashes[label] = manager.hashes()
    if nano is not None:
        hashes[NANO] = count_nano_hashes(nano[0], nano[1], trace)
    rows = []
    for label, make in makers.items():
        # nano-vllm's peak is not sampled: with a Python object per block, every snapshot takes seconds
        pool, peak = bytes_per_block(make, packages[label], trace, peak=label != NANO)
        rows.append(Row(label, results[label], hashes[label], pool, peak))
    return rows


def print_rows(trace: Trace, rows: list[Row]) -> None:
    print(
        f"\ntrace {trace.name}: {len(trace.requests)} requests, {trace.num_blocks:,} blocks of {BLOCK_SIZE}"
    )
    print(
        f"  {'':28} {'manager CPU s':>13} {'ops/s':>11} {'hashes':>9} {'bytes/block pool / peak':>24} "
        f"{'steps':>6} {'refused':>7} {'preempted':>9}"
    )
    for row in rows:
        r = row.best
        peak = "-" if math.isnan(row.peak) else f"{row.peak:.1f}"
        print(
            f"  {row.label:28} {r.seconds:13.3f} {r.ops / r.seconds:11,.0f} {row.hashes:9,} "
            f"{row.pool:14.1f} / {peak:>7} {r.steps:6} {r.refused:7} {r.preemptions:9}"
        )
    by_label = {row.label: row for row in rows}
    if NANO in by_label:
        nano, paged = by_label[NANO], by_label[PAGED_ON]
        each = [n.seconds / p.seconds for n, p in zip(nano.rounds, paged.rounds, strict=True)]
        best = nano.best.seconds / paged.best.seconds
        print(
            f"  nano-vllm / pagedkv (prefix caching on), manager time: {best:.2f}x (best rounds); "
            f"round by round {min(each):.2f}x - {max(each):.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", nargs="+", choices=["default", "shared-prefix", "shared-prefix-20k"])
    parser.add_argument("--api", choices=["per-sequence", "batch"], default="per-sequence")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved replays per manager; the best is kept"
    )
    parser.add_argument("--nano-vllm", type=Path, metavar="PATH", help="a nano-vllm checkout to compare with")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    nano = None
    if args.nano_vllm is not None:
        nano = load_nano_vllm(args.nano_vllm)
    traces = make_traces()
    print(f"API: {args.api}; {args.rounds} interleaved rounds, best kept; CPU time")
    for name in args.trace or list(traces):
        trace = traces[name]
        print_rows(trace, bench_trace(trace, args.rounds, args.api == "batch", nano))


if __name__ == "__main__":
    main()
