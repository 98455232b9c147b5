"""The engine refuses what it cannot run with typed errors, before touching any state."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pagedkv import InvalidArgument, PagedKVError  # noqa: E402
from pagedkv.engine import Engine, PromptTooLong, UnsupportedModel, random_model  # noqa: E402
from pagedkv.engine.model_runner import ModelRunner  # noqa: E402
from pagedkv.tensors import CacheMismatch, PagedKVCache  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return random_model("llama", max_position_embeddings=64)


def test_prompt_longer_than_the_model(model) -> None:
    engine = Engine(model, num_blocks=64, block_size=4)
    with pytest.raises(PromptTooLong, match="max_position_embeddings=64"):
        engine.add_request(list(range(65)), 1)
    with pytest.raises(PromptTooLong, match="60 tokens \\+ max_new_tokens=5 = 65"):
        engine.add_request(list(range(60)), 5)
    assert not engine.has_unfinished_requests()


def test_sequence_larger_than_the_pool(model) -> None:
    engine = Engine(model, num_blocks=4, block_size=4)
    engine.add_request(list(range(10)), 7)  # 16 tokens held at most: fits exactly
    with pytest.raises(PromptTooLong, match="needs 5 blocks of 4 but the pool has 4"):
        engine.add_request(list(range(10)), 8)


@pytest.mark.parametrize(
    ("prompt", "max_new", "n", "message"),
    [
        ([], 1, 1, "empty prompt"),
        ([1, 256], 1, 1, "token id 256 is outside"),
        ([1, -1], 1, 1, "token id -1"),
        ([1], 0, 1, "must be >= 1"),
        ([1], 1, 0, "must be >= 1"),
        ([1], 1, 9, "exceed max_num_seqs=8"),
    ],
)
def test_bad_requests(model, prompt, max_new, n, message) -> None:
    engine = Engine(model, num_blocks=16, block_size=4, max_num_seqs=8)
    with pytest.raises(InvalidArgument, match=message):
        engine.add_request(prompt, max_new, n)


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
    assert engine.generate([], 4) == []
    assert engine.stats.steps == 0
