"""What the simulator says, step by step, and what the page's data says: the two sides of the watch tests.

`Truth` is an `on_step` observer that keeps, for *every* step, each running sequence's block table or
chunk and length, every block's reference count and the manager's copy-on-write total, straight from
the cache and its `BlockManager`, and counts preemptions on its own (a request running at one step and
queued at the next). `decode` reads a state of the embedded document back into the same shape. The
tests compare the two; they share no code with `pagedkv.watch`.

`SHARED_PREFIXES` is a Mooncake trace small enough that its prefix-cache hits are known by hand.
"""

from __future__ import annotations

import argparse
import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pagedkv.simulator import PagedCache, SimResult, compare
from pagedkv.simulator.cli import Run, add_run_arguments, build_run

SMALL = ["--num-requests", "40", "--rate", "20", "--prompt-range", "20", "300", "--output-range", "5", "120"]

SHARED_PREFIXES = [
    # one request at a time (each is done seconds before the next arrives), Mooncake hash ids name 512-token
    # prompt chunks: request 1 shares chunk 7 with request 0 (512 tokens: 32 blocks of 16), request 2
    # shares chunks 7 and 8 (1,024 tokens: 64 blocks); request 0 finds an empty cache
    {"timestamp": 0, "input_length": 1030, "output_length": 4, "hash_ids": [7, 8, 9]},
    {"timestamp": 5000, "input_length": 600, "output_length": 4, "hash_ids": [7, 5]},
    {"timestamp": 10000, "input_length": 1040, "output_length": 4, "hash_ids": [7, 8, 3]},
]
SHARED_PREFIX_BLOCKS = {0: 0, 1: 32, 2: 64}
"""Request -> leading blocks of its prompt served by the prefix cache, with `shared_prefixes` options."""


def shared_prefixes(folder: Path) -> list[str]:
    """Options that simulate `SHARED_PREFIXES` (written to `folder`) with prefix caching, blocks of 16."""
    trace = folder / "shared_prefixes.jsonl"
    trace.write_text("".join(json.dumps(row) + "\n" for row in SHARED_PREFIXES), encoding="utf-8")
    options = ["--enable-prefix-caching", "--block-size", "16", "--max-model-len", "2048", "--rows", "4"]
    return ["--trace", str(trace), *options]


def build(argv: list[str]) -> Run:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    return build_run(parser.parse_args(argv), block_tables=True)


@dataclass
class StepTruth:
    seqs: dict[tuple[int, int], tuple[Any, int]]  # (request, sample) -> (block table or chunk, length)
    ref_counts: list[int] = field(default_factory=list)
    cached_free: int = 0
    cow_copies: int = 0
    prefix_hit_tokens: int = 0  # the paged cache's own count of prompt tokens served by its prefix cache
    preemptions: int = 0


class Truth:
    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.steps: dict[int, StepTruth] = {}
        self._preemptions = 0
        self._previous: set[int] = set()

    def __call__(self, view: Any) -> None:
        queued = {group.gid for group in view.waiting} | {group.gid for group in view.swapped}
        self._preemptions += len(self._previous & queued)
        self._previous = set(view.running) | set(view.prefilling)
        cache, seqs = self.cache, {}
        resident = [(gid, group.length(view.tick)) for gid, group in view.running.items()]
        resident += [(gid, group.computed) for gid, group in view.prefilling.items()]
        for gid, length in resident:
            if isinstance(cache, PagedCache):
                for i, seq in enumerate(cache.sequences(gid)):
                    seqs[(gid, i)] = (cache.bm.block_table(seq), length)
            else:
                for i, chunk in enumerate(cache.placement(gid)):
                    seqs[(gid, i)] = (chunk, length)
        truth = StepTruth(seqs, preemptions=self._preemptions)
        if isinstance(cache, PagedCache):
            bm = cache.bm
            truth.ref_counts = [bm.ref_count(b) for b in range(bm.num_blocks)]
            truth.cached_free = bm.num_cached_free_blocks
            truth.cow_copies = bm.stats.cow_copies
            truth.prefix_hit_tokens = cache.prompt_hit_tokens
        self.steps[view.step] = truth


def run_truth(argv: list[str]) -> tuple[Run, dict[str, SimResult], dict[str, Truth]]:
    """Simulate the options `argv` with a `Truth` on every cache (a fresh run, independent of watch),
    the paged cache always with its block tables (`standard_caches(block_tables=True)`)."""
    run = build(argv)
    caches = run.caches
    truths = {cache.name: Truth(cache) for cache in caches}
    results = compare(run.requests, caches, run.config, on_step=truths.get)
    return run, results, truths


def cached_blocks(state: dict[str, Any]) -> list[int]:
    """The free blocks still in the prefix cache, from a state's bitmap."""
    bits = base64.b64decode(state["cached"])
    return [i * 8 + k for i, byte in enumerate(bits) for k in range(8) if byte >> k & 1]


def decode(cache: dict[str, Any], state: dict[str, Any]) -> dict[tuple[int, int], tuple[Any, int]]:
    """A document state as (request, sample) -> (block table or first unit / row, length)."""
    placements, seqs, out = cache["placements"], state["seqs"], {}
    for j in range(0, len(seqs), 3):
        p, length, held = seqs[j : j + 3]
        key = (placements["request"][p], placements["sample"][p])
        where = placements["blocks"][p][:held] if cache["kind"] == "blocks" else placements["start"][p]
        assert key not in out, f"{cache['name']}: sequence {key} listed twice"
        out[key] = (where, length)
    return out
