"""The engine's greedy output is token-identical to HF `generate(do_sample=False)`, in float64.

For Llama, Mistral, Qwen2, Qwen3 and Gemma 3, with and without prefix caching, with a roomy pool and with
one small enough to force preemption; with n > 1 forks; with requests arriving while others run.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from engine_cases import (  # noqa: E402
    BLOCK_SIZE,
    MAX_NEW_TOKENS,
    all_samples,
    first_samples,
    greedy,
    hf_greedy,
    make_prompts,
)

from pagedkv.engine import Engine, random_model  # noqa: E402

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma3"]
ROOMY, TIGHT = 256, 12  # 12 blocks of 4 hold the longest sequence (32 tokens) but not the batch


@pytest.fixture(scope="module", params=FAMILIES)
def case(request):
    model = random_model(request.param, seed=FAMILIES.index(request.param))
    prompts = make_prompts()
    return model, prompts, [hf_greedy(model, p) for p in prompts]


def finished_cleanly(engine: Engine) -> bool:
    manager = engine.block_manager
    manager.check_invariants()
    return len(manager) == 0 and manager.num_free_blocks == manager.num_blocks


@pytest.mark.parametrize("prefix_caching", [False, True], ids=["no-prefix-cache", "prefix-cache"])
@pytest.mark.parametrize("num_blocks", [ROOMY, TIGHT], ids=["roomy", "preempting"])
def test_greedy_matches_hf(case, prefix_caching: bool, num_blocks: int) -> None:
    model, prompts, expected = case
    engine = Engine(model, num_blocks=num_blocks, block_size=BLOCK_SIZE, enable_prefix_caching=prefix_caching)
    assert first_samples(engine.generate(prompts, greedy())) == expected
    assert (engine.stats.preemptions > 0) == (num_blocks == TIGHT)
    if prefix_caching:
        assert engine.block_manager.stats.hit_tokens > 0
        assert engine.stats.cached_tokens > 0
    assert finished_cleanly(engine)


def test_prefix_cache_skips_exactly_the_cached_tokens(case) -> None:
    model, prompts, expected = case
    plain = Engine(model, num_blocks=ROOMY, block_size=BLOCK_SIZE)
    cached = Engine(model, num_blocks=ROOMY, block_size=BLOCK_SIZE, enable_prefix_caching=True)
    assert first_samples(plain.generate(prompts, greedy())) == expected
    assert first_samples(cached.generate(prompts, greedy())) == expected
    assert plain.stats.prefill_tokens == sum(map(len, prompts))
    assert cached.stats.prefill_tokens + cached.stats.cached_tokens == plain.stats.prefill_tokens
    # hits: prompt 2 (3 blocks of the shared prefix), 4 (2 blocks), 7 (3 blocks), 9 (2 blocks, a repeat)
    assert cached.block_manager.stats.hit_tokens == 12 + 8 + 12 + 8
    # prompts 2 and 9 are entirely cached: their last token is recomputed for its logits
    assert cached.stats.cached_tokens == 11 + 8 + 12 + 7


@pytest.mark.parametrize("num_blocks", [ROOMY, TIGHT], ids=["roomy", "preempting"])
def test_parallel_samples_fork_the_prompt(case, num_blocks: int) -> None:
    model, prompts, expected = case
    engine = Engine(model, num_blocks=num_blocks, block_size=BLOCK_SIZE)
    outputs = all_samples(engine.generate(prompts, greedy(n=3)))
    assert outputs == [[ref] * 3 for ref in expected]
    assert engine.stats.forks == 2 * len(prompts)
    assert engine.stats.cow_copies > 0  # prompts ending mid-block are copied on first write
    if num_blocks == ROOMY:
        assert engine.stats.prefill_tokens == sum(map(len, prompts))  # each prompt computed once, not 3 times
    else:
        assert engine.stats.preemptions > 0
    assert finished_cleanly(engine)


def test_requests_arrive_and_finish_at_different_steps(case) -> None:
    model, prompts, _ = case
    budgets = [3, 12, 1, 7, 10, 5, 2, 9, 4, 6]
    engine = Engine(model, num_blocks=40, block_size=BLOCK_SIZE, enable_prefix_caching=True)
    ids, results, finish_step = {}, {}, {}
    for step in range(200):
        if step % 2 == 0 and len(ids) < len(prompts):
            i = len(ids)
            ids[engine.add_request(prompts[i], greedy(budgets[i]))] = i
        if not engine.has_unfinished_requests():
            break
        for done in engine.step():
            if done.finished:
                results[ids[done.request_id]] = done.outputs[0].token_ids
                finish_step[ids[done.request_id]] = step
    assert len(results) == len(prompts)
    assert len(set(finish_step.values())) > 3
    for i, prompt in enumerate(prompts):
        assert results[i] == hf_greedy(model, prompt, budgets[i])
    assert finished_cleanly(engine)


def test_max_num_seqs_and_token_budget_only_change_the_schedule(case) -> None:
    model, prompts, expected = case
    engine = Engine(model, num_blocks=ROOMY, block_size=BLOCK_SIZE, max_num_seqs=3, max_num_batched_tokens=20)
    assert first_samples(engine.generate(prompts, greedy())) == expected
    assert engine.stats.steps > MAX_NEW_TOKENS * 3


@pytest.mark.parametrize(
    ("family", "overrides"),
    [
        ("mistral", {"sliding_window": 6}),
        ("qwen2", {"use_sliding_window": True, "sliding_window": 5, "max_window_layers": 1}),
        ("llama", {"tie_word_embeddings": True, "attention_bias": True, "mlp_bias": True}),
        (
            "qwen2",
            {"tie_word_embeddings": True, "rope_parameters": {"rope_type": "default", "rope_theta": 500.0}},
        ),
        ("llama", {"num_layers": 3, "num_kv_heads": 1, "rms_norm_eps": 1e-3}),
        ("mistral", {"num_kv_heads": 4, "head_dim": 8}),
        ("qwen3", {"use_sliding_window": True, "sliding_window": 5, "max_window_layers": 1}),
        (
            "gemma3",
            {
                "sliding_window": 5,
                "layer_types": ["sliding_attention", "full_attention"],
                "final_logit_softcapping": 3.0,
                "query_pre_attn_scalar": 8,
            },
        ),
    ],
)
def test_config_variants_match_hf(family: str, overrides: dict) -> None:
    model = random_model(family, seed=5, **overrides)
    prompts = make_prompts(seed=1)
    expected = [hf_greedy(model, p) for p in prompts]
    engine = Engine(model, num_blocks=TIGHT, block_size=BLOCK_SIZE, enable_prefix_caching=True)
    assert first_samples(engine.generate(prompts, greedy())) == expected


def test_eos_stops_generation_like_hf() -> None:
    model = random_model("llama", seed=3)
    prompt = make_prompts()[1]
    free_run = hf_greedy(model, prompt)
    stop_at = next(i for i in range(2, len(free_run)) if free_run[i] not in free_run[:i])
    model.generation_config.eos_token_id = free_run[stop_at]
    expected = hf_greedy(model, prompt)
    assert expected == free_run[: stop_at + 1]  # HF stopped and kept the EOS token
    engine = Engine(model, num_blocks=ROOMY, block_size=BLOCK_SIZE)
    assert first_samples(engine.generate([prompt], greedy())) == [expected]
    assert engine.generate([prompt], greedy())[0].outputs[0].finish_reason == "eos"
    assert first_samples(engine.generate([prompt], greedy(ignore_eos=True))) == [free_run]


def test_paged_store_holds_hf_keys_and_values() -> None:
    """After the prefill step the cache, read by block table, holds exactly HF's K/V of the prompt."""
    model = random_model("qwen2", seed=2)
    prompt = make_prompts()[7]
    engine = Engine(model, num_blocks=16, block_size=BLOCK_SIZE)
    engine.add_request(prompt, greedy(5))
    engine.step()
    (seq,) = engine.scheduler.running
    table = engine.block_manager.block_table(seq.seq_id)
    with torch.inference_mode():
        hf_cache = model(torch.tensor([prompt]), use_cache=True).cache
    for layer in range(model.config.num_hidden_layers):
        keys, values = engine.cache.gather(layer, table, len(prompt))
        assert torch.allclose(keys, hf_cache.layers[layer].keys[0].transpose(0, 1), atol=1e-12, rtol=0)
        assert torch.allclose(values, hf_cache.layers[layer].values[0].transpose(0, 1), atol=1e-12, rtol=0)


def test_engine_follows_the_model_dtype() -> None:
    model = random_model("llama", dtype=torch.float32)
    engine = Engine(model, num_blocks=32, block_size=BLOCK_SIZE)
    assert engine.cache.dtype == torch.float32
    outputs = first_samples(engine.generate(make_prompts()[:3], greedy(4, ignore_eos=True)))
    assert [len(o) for o in outputs] == [4, 4, 4]
