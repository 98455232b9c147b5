"""Sampling: the distribution drawn from (temperature, min-p, top-k, top-p, on hand-written logits), and
with n > 1: seeded, and unchanged by preemption or batch mates."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from engine_cases import BLOCK_SIZE, all_samples, hf_greedy, make_prompts  # noqa: E402

from pagedkv.engine import Engine, SamplingParams, random_model, sampler  # noqa: E402
from pagedkv.engine.sampler import filtered_probs  # noqa: E402
from pagedkv.engine.sequence import Request, Sequence  # noqa: E402
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


def test_min_p_drops_exactly_the_tokens_below_min_p_times_the_most_likely() -> None:
    logits = torch.log(torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15]))
    # min_p=0.3: threshold 0.12 drops ids 0 (0.05) and 2 (0.10); the rest share 0.85
    probs = filtered_probs(logits, min_p=0.3, top_k=0, top_p=1.0)
    assert torch.nonzero(probs).flatten().tolist() == [1, 3, 4]
    assert torch.allclose(probs, torch.tensor([0.0, 0.4, 0.0, 0.3, 0.15]) / 0.85)
    # min_p=0.2: threshold 0.08 drops id 0 only
    probs = filtered_probs(logits, min_p=0.2, top_k=0, top_p=1.0)
    assert torch.allclose(probs, torch.tensor([0.0, 0.4, 0.1, 0.3, 0.15]) / 0.95)
    # min_p=1: only the most likely token is left
    probs = filtered_probs(logits, min_p=1.0, top_k=0, top_p=1.0)
    assert probs.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]


def drawn_from(monkeypatch, logits: torch.Tensor, params: SamplingParams, draws: int = 1):
    """The distributions `sampler.sample` draws from for one sequence with `params`, and the tokens."""
    seen: list[torch.Tensor] = []
    multinomial = torch.multinomial

    def spy(probs, num_samples, **kwargs):
        seen.append(probs.clone())
        return multinomial(probs, num_samples, **kwargs)

    monkeypatch.setattr(sampler.torch, "multinomial", spy)
    request = Request(0, [0], params, frozenset())
    seq = Sequence(0, request, [0], generator=torch.Generator().manual_seed(5))
    tokens = [sampler.sample(logits[None], [seq])[0].token for _ in range(draws)]
    return seen, tokens


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_divides_the_logits_before_the_draw(monkeypatch, temperature: float) -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5], dtype=torch.float64)
    params = SamplingParams(temperature=temperature)
    seen, tokens = drawn_from(monkeypatch, logits, params, draws=200)
    expected = torch.exp(logits / temperature)
    expected = (expected / expected.sum()).float()
    assert len(seen) == 200
    for probs in seen:
        assert torch.allclose(probs, expected, atol=1e-6)
    # the draws are the sequence's own generator drawing from that distribution
    generator = torch.Generator().manual_seed(5)
    assert tokens == [int(torch.multinomial(expected, 1, generator=generator)) for _ in range(200)]


@pytest.mark.parametrize(
    ("temperature", "expected"),
    [(1.0, [0.5 / 0.8, 0.3 / 0.8, 0.0]), (0.5, [1.0, 0.0, 0.0])],  # at T=0.5: p ~ [.25, .09, .04]
)
def test_min_p_applies_to_the_tempered_distribution(monkeypatch, temperature: float, expected) -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    (probs,), _ = drawn_from(monkeypatch, logits, SamplingParams(temperature=temperature, min_p=0.5))
    assert torch.allclose(probs, torch.tensor(expected))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"temperature": -1.0}, "temperature"), ({"top_k": -2}, "top_k"), ({"top_p": 0.0}, "top_p")],
)
def test_bad_sampling_params(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        SamplingParams(**kwargs)
