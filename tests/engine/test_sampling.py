"""Sampling (temperature / top-k / top-p) with n > 1: seeded, and unchanged by preemption or batch mates."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from engine_cases import BLOCK_SIZE, all_samples, hf_greedy, make_prompts  # noqa: E402

from pagedkv.engine import Engine, SamplingParams, random_model  # noqa: E402
from pagedkv.engine.sampler import filtered_probs  # noqa: E402
from pagedkv.errors import InvalidArgument  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return random_model("llama", seed=11)


def sample(model, num_blocks: int, seed: int, **kwargs) -> list[list[list[int]]]:
    engine = Engine(model, num_blocks=num_blocks, block_size=BLOCK_SIZE)
    params = SamplingParams(n=3, temperature=1.0, max_tokens=8, ignore_eos=True, **kwargs)
    engine.seed = seed
    return all_samples(engine.generate(make_prompts(), params)), engine.stats


def test_seeded_samples_do_not_depend_on_preemption(model) -> None:
    roomy, roomy_stats = sample(model, 256, seed=7)
    tight, tight_stats = sample(model, 12, seed=7)
    assert roomy_stats.preemptions == 0 < tight_stats.preemptions
    assert roomy == tight
    assert all(len(s) == 8 for samples in roomy for s in samples)
    assert any(len({tuple(s) for s in samples}) == 3 for samples in roomy)  # the n samples differ
    other, _ = sample(model, 256, seed=8)
    assert other != roomy


def test_top_k_one_is_greedy(model) -> None:
    prompts = make_prompts()
    expected = [hf_greedy(model, p, 6) for p in prompts]
    engine = Engine(model, num_blocks=64, block_size=BLOCK_SIZE)
    params = SamplingParams(n=2, temperature=0.7, top_k=1, max_tokens=6)
    assert all_samples(engine.generate(prompts, params)) == [[e, e] for e in expected]


def test_top_p_keeps_the_smallest_prefix_reaching_p() -> None:
    logits = torch.log(torch.tensor([0.05, 0.5, 0.25, 0.2]))
    probs = filtered_probs(logits, min_p=0.0, top_k=0, top_p=0.7)
    assert torch.allclose(probs, torch.tensor([0.0, 0.5, 0.25, 0.0]))
    probs = filtered_probs(logits, min_p=0.0, top_k=2, top_p=1.0)
    assert torch.allclose(probs, torch.tensor([0.0, 0.5 / 0.75, 0.25 / 0.75, 0.0]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"temperature": -1.0}, "temperature"), ({"top_k": -2}, "top_k"), ({"top_p": 0.0}, "top_p")],
)
def test_bad_sampling_params(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        SamplingParams(**kwargs)
