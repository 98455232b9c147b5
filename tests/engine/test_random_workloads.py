"""Random workloads: arrivals at random steps, random n, shared prefixes, small pools, prefix cache on/off.

After every step the block manager's invariants hold and every running sequence holds exactly the
slots of its computed tokens; at the end every sample equals HF's greedy output and every block is
free again.
"""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from engine_cases import greedy, hf_greedy  # noqa: E402

from pagedkv.engine import Engine, random_model  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return random_model("qwen2", seed=21, vocab_size=64)


@pytest.mark.parametrize("seed", range(4))
def test_random_workload_matches_hf(model, seed: int) -> None:
    rng = random.Random(seed)
    block_size = rng.choice([2, 4, 8])
    prefixes = [[rng.randrange(64) for _ in range(rng.randint(1, 12))] for _ in range(3)]
    requests = []
    for _ in range(12):
        prompt = rng.choice(prefixes)[: rng.randint(1, 12)] + [
            rng.randrange(64) for _ in range(rng.randint(0, 6))
        ]
        requests.append((prompt, rng.randint(1, 8), rng.choice([1, 1, 2, 3])))
    longest = max(len(p) + m - 1 for p, m, _ in requests)
    num_blocks = -(-longest // block_size) + rng.randint(0, 6)
    engine = Engine(model, num_blocks, block_size, enable_prefix_caching=seed % 2 == 1)
    pending = list(requests)
    ids: dict[int, int] = {}
    results: dict[int, list[list[int]]] = {}
    while pending or engine.has_unfinished_requests():
        while pending and (rng.random() < 0.4 or not engine.has_unfinished_requests()):
            prompt, budget, n = pending.pop(0)
            ids[engine.add_request(prompt, greedy(budget, n=n))] = len(ids)
        for done in engine.step():
            if done.finished:
                results[ids[done.request_id]] = [sample.token_ids for sample in done.outputs]
        engine.block_manager.check_invariants()
        for seq in engine.scheduler.running:
            assert engine.block_manager.num_tokens(seq.seq_id) == len(seq.tokens) - 1 == seq.num_computed
    for i, (prompt, budget, n) in enumerate(requests):
        assert results[i] == [hf_greedy(model, prompt, budget)] * n
    assert engine.block_manager.num_free_blocks == num_blocks
    assert engine.stats.preemptions > 0 and engine.stats.forks > 0  # the pool was small enough to matter
    assert (engine.block_manager.stats.hit_tokens > 0) == (seed % 2 == 1)
