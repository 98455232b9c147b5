"""The engine refuses what it cannot run with typed errors, before touching any state."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from engine_cases import first_samples, greedy, make_prompts  # noqa: E402

from pagedkv import InvalidArgument, PagedKVError  # noqa: E402
from pagedkv.engine import (  # noqa: E402
    Engine,
    InvalidPrompt,
    PromptTooLong,
    SamplingParams,
    UnsupportedModel,
    random_model,
)
from pagedkv.engine.model_runner import ModelRunner  # noqa: E402
from pagedkv.tensors import CacheMismatch, PagedKVCache  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return random_model("llama", max_position_embeddings=64)


def test_prompt_longer_than_the_model(model) -> None:
    engine = Engine(model, num_blocks=64, block_size=4)
    with pytest.raises(PromptTooLong, match="max_position_embeddings=64"):
        engine.add_request(list(range(65)), greedy(1))
    with pytest.raises(PromptTooLong, match="60 tokens \\+ max_tokens=5 = 65"):
        engine.add_request(list(range(60)), greedy(5))
    assert not engine.has_unfinished_requests()


def test_sequence_larger_than_the_pool(model) -> None:
    engine = Engine(model, num_blocks=4, block_size=4)
    engine.add_request(list(range(10)), greedy(7))  # 16 tokens held at most: fits exactly
    with pytest.raises(PromptTooLong, match="needs 5 blocks of 4 but the pool has 4"):
        engine.add_request(list(range(10)), greedy(8))


@pytest.mark.parametrize(
    ("prompt", "n", "error", "message"),
    [
        ([], 1, InvalidPrompt, "empty prompt"),
        ([1, 256], 1, InvalidPrompt, "token id 256 is outside"),
        ([1, -1], 1, InvalidPrompt, "token id -1"),
        ([1, 2.0], 1, InvalidPrompt, r"token ids must be ints, got 2\.0 \(float\)"),
        ([1, True], 1, InvalidPrompt, "token ids must be ints, got True"),
        ("hello", 1, InvalidPrompt, "got a str; tokenize it first"),
        (7, 1, InvalidPrompt, "a prompt is a list of token ids, got int"),
        (torch.tensor([1.0, 2.0]), 1, InvalidPrompt, r"token ids must be ints, got 1\.0"),
        (torch.tensor([[1, 2]]), 1, InvalidPrompt, "must be 1-D, got 2"),
        ([1], 9, InvalidArgument, "exceed max_num_seqs=8"),
    ],
)
def test_bad_requests(model, prompt, n, error, message) -> None:
    engine = Engine(model, num_blocks=16, block_size=4, max_num_seqs=8)
    with pytest.raises(error, match=message):
        engine.add_request(prompt, greedy(1, n=n))
    assert not engine.has_unfinished_requests()


def test_numpy_and_tensor_token_ids_are_accepted(model) -> None:
    np = pytest.importorskip("numpy")
    engine = Engine(model, num_blocks=16, block_size=4)
    for prompt in ([1, 2, 3], np.array([1, 2, 3]), torch.tensor([1, 2, 3]), (1, 2, 3)):
        engine.add_request(prompt, greedy(2))
    outputs = []
    while engine.has_unfinished_requests():
        outputs += [o for o in engine.step() if o.finished]
    assert len({tuple(o.outputs[0].token_ids) for o in outputs}) == 1
    assert all(type(t) is int for o in outputs for t in o.prompt_token_ids)


def test_bad_engine_settings(model) -> None:
    with pytest.raises(InvalidArgument, match="max_num_seqs"):
        Engine(model, num_blocks=16, max_num_seqs=0)
    with pytest.raises(InvalidArgument, match="num_blocks"):
        Engine(model, num_blocks=0)


def test_unsupported_models() -> None:
    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32, n_positions=32)
    )
    with pytest.raises(UnsupportedModel, match="model_type 'gpt2' is not supported"):
        Engine(gpt2, num_blocks=8)
    with pytest.raises(UnsupportedModel, match="model_type None"):
        Engine(torch.nn.Linear(2, 2), num_blocks=8)
    assert issubclass(UnsupportedModel, PagedKVError)
    with pytest.raises(UnsupportedModel, match=r"attn_logit_softcapping=50\.0"):
        Engine(random_model("gemma3", attn_logit_softcapping=50.0), num_blocks=8)


def test_cache_that_does_not_fit_the_model(model) -> None:
    runner = ModelRunner(model)
    runner.check_cache(runner.make_cache(4, 4))
    for cache in (
        PagedKVCache(2, 4, 4, 2, 16, dtype=torch.float32),  # float32 cache, float64 model
        PagedKVCache(2, 4, 4, 4, 16, dtype=torch.float64),  # wrong number of KV heads
        PagedKVCache(3, 4, 4, 2, 16, dtype=torch.float64),  # wrong number of layers
    ):
        with pytest.raises(CacheMismatch, match="does not fit the model"):
            runner.check_cache(cache)


def test_step_without_requests_does_nothing(model) -> None:
    engine = Engine(model, num_blocks=8, block_size=4)
    assert engine.step() == []
    assert engine.generate([], greedy(4)) == []
    assert engine.stats.steps == 0


def manager_is_clean(engine: Engine) -> None:
    manager = engine.block_manager
    manager.check_invariants()
    assert len(manager) == 0
    assert manager.num_free_blocks == manager.num_blocks
    assert not engine.has_unfinished_requests()


def test_a_bad_prompt_anywhere_queues_nothing(model) -> None:
    """Today's failure mode: prompt 1 queued, prompt 2 refused, prompt 1 then ran inside the next call."""
    engine = Engine(model, num_blocks=32, block_size=4)
    prompts = make_prompts()[:3]
    with pytest.raises(InvalidPrompt, match="token id 999"):
        engine.generate([prompts[0], [1, 999], prompts[2]], greedy())
    manager_is_clean(engine)
    with pytest.raises(InvalidPrompt, match="got a str"):
        engine.generate([prompts[0], "text"], greedy())
    with pytest.raises(InvalidPrompt, match="takes a list of prompts"):
        engine.generate("text", greedy())
    manager_is_clean(engine)
    outputs = engine.generate(prompts, greedy())
    assert [o.request_id for o in outputs] == [0, 1, 2]  # refused calls used no request ids
    assert first_samples(outputs) == first_samples(Engine(model, 32, 4).generate(prompts, greedy()))


def test_nan_temperature_is_refused_before_the_engine_sees_it() -> None:
    with pytest.raises(InvalidArgument, match=r"temperature must be >= 0 .* got nan"):
        SamplingParams(temperature=float("nan"))


@pytest.mark.parametrize("fail_at_step", [1, 3])
@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_step_that_raises_leaves_the_engine_clean(model, monkeypatch, fail_at_step, error) -> None:
    prompts = make_prompts()
    engine = Engine(model, num_blocks=12, block_size=4, enable_prefix_caching=True)  # small: preempts
    expected = first_samples(Engine(model, 12, 4).generate(prompts, greedy()))
    forward = engine.runner.forward
    calls = {"n": 0}

    def failing_forward(cache, batch):
        calls["n"] += 1
        if calls["n"] == fail_at_step:
            raise error
        return forward(cache, batch)

    monkeypatch.setattr(engine.runner, "forward", failing_forward)
    with pytest.raises(type(error)):
        engine.generate(prompts, greedy(n=2))
    manager_is_clean(engine)
    assert first_samples(engine.generate(prompts, greedy())) == expected


def test_a_failed_step_in_a_user_loop_aborts_only_what_it_ran(model, monkeypatch) -> None:
    engine = Engine(model, num_blocks=64, block_size=4, max_num_seqs=2)
    prompts = make_prompts()[:3]
    ids = [engine.add_request(p, greedy(3)) for p in prompts]  # the third waits: max_num_seqs=2
    monkeypatch.setattr(engine.runner, "forward", lambda cache, batch: (_ for _ in ()).throw(ValueError()))
    with pytest.raises(ValueError):
        engine.step()
    monkeypatch.undo()
    assert engine.abort_request(ids[0]) is None  # already aborted by the failed step
    outputs = []
    while engine.has_unfinished_requests():
        outputs += [o for o in engine.step() if o.finished]
    assert [o.request_id for o in outputs] == [ids[2]]
    manager_is_clean(engine)


def test_generate_returns_the_same_shape_whatever_n(model) -> None:
    engine = Engine(model, num_blocks=64, block_size=4)
    prompts = make_prompts()[:2]
    for n in (1, 3):
        outputs = engine.generate(prompts, greedy(4, n=n))
        assert [len(o.outputs) for o in outputs] == [n, n]
        assert all(len(s.token_ids) == 4 and s.index == i for o in outputs for i, s in enumerate(o.outputs))
