"""Per-request timings, on a clock the test drives: TTFT runs from `add_request` to the end of the step
that sampled the request's first token; TPOT is the time after the first token divided by the output
tokens after the first (of the longest sample), None for a one-token output."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from engine_cases import BLOCK_SIZE, make_prompts  # noqa: E402

from pagedkv.engine import Engine, SamplingParams, random_model  # noqa: E402
from pagedkv.engine import engine as engine_module  # noqa: E402
from pagedkv.engine import sequence as sequence_module  # noqa: E402

FORWARD = 0.5  # seconds each forward pass takes on the test's clock


class Clock:
    """Stands in for the `time` module of the engine's files: `perf_counter` reads `now`."""

    def __init__(self, now: float) -> None:
        self.now = now

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def model():
    return random_model("llama", seed=11)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock(1000.0)
    monkeypatch.setattr(engine_module, "time", clock)
    monkeypatch.setattr(sequence_module, "time", clock)
    return clock


def timed_engine(model, clock: Clock, **kwargs) -> Engine:
    """An engine whose forward passes take FORWARD seconds on `clock`."""
    engine = Engine(model, num_blocks=64, block_size=BLOCK_SIZE, **kwargs)
    forward = engine.runner.forward

    def slow_forward(*args):
        logits = forward(*args)
        clock.now += FORWARD
        return logits

    engine.runner.forward = slow_forward
    return engine


def step_at(engine: Engine, clock: Clock, now: float) -> dict:
    clock.now = now
    return {output.request_id: output for output in engine.step()}


def test_ttft_from_add_request_and_tpot_after_the_first_token(model, clock) -> None:
    engine = timed_engine(model, clock, max_num_seqs=2)
    prompts = make_prompts()
    a = engine.add_request(prompts[0], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    clock.now = 1003.0
    b = engine.add_request(prompts[1], SamplingParams(temperature=0, max_tokens=1, ignore_eos=True))
    clock.now = 1005.0
    c = engine.add_request(prompts[3], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))

    # step 1 (1010 -> 1010.5): A and B start (max_num_seqs=2; C waits); B's only token ends it
    out = step_at(engine, clock, 1010.0)
    assert sorted(out) == [a, b]
    assert out[a].ttft == 10.5 and out[a].tpot is None  # one token so far
    assert out[b].finished and out[b].ttft == 7.5 and out[b].tpot is None  # one-token output
    # step 2 (1013 -> 1013.5): A's second token; C admitted in B's place, its first token
    out = step_at(engine, clock, 1013.0)
    assert sorted(out) == [a, c]
    assert out[a].ttft == 10.5 and out[a].tpot == 3.0
    assert out[c].ttft == 8.5 and out[c].tpot is None  # waited in the queue: counted from add_request
    step_at(engine, clock, 1030.0)
    out = step_at(engine, clock, 1040.0)
    assert out[a].finished and out[c].finished
    assert [len(out[r].outputs[0].token_ids) for r in (a, c)] == [4, 3]
    assert out[a].ttft == 10.5 and out[a].tpot == (1040.5 - 1010.5) / 3
    assert out[c].ttft == 8.5 and out[c].tpot == (1040.5 - 1013.5) / 2
    assert not engine.has_unfinished_requests()


def test_tpot_follows_the_longest_sample(model, clock) -> None:
    prompt = make_prompts()[4]
    params = SamplingParams(n=2, temperature=1.0, seed=3, max_tokens=5, ignore_eos=True)
    (free,) = timed_engine(model, clock).generate([prompt], params)
    first, second = (sample.token_ids for sample in free.outputs)
    # a token that ends sample 0 after 2 tokens and never occurs in sample 1: seeded samples draw the
    # same tokens again, so with it as a stop token sample 0 has 2 tokens and sample 1 all 5
    assert first[1] not in first[:1] + second
    stopped = SamplingParams(
        n=2, temperature=1.0, seed=3, max_tokens=5, ignore_eos=True, stop_token_ids=[first[1]]
    )
    engine = timed_engine(model, clock)
    clock.now = 2000.0
    request = engine.add_request(prompt, stopped)
    outputs = [step_at(engine, clock, 2001.0 + 10 * i)[request] for i in range(5)]
    assert [s.token_ids for s in outputs[-1].outputs] == [first[:2], second]
    assert outputs[1].outputs[0].finish_reason == "stop" and outputs[-1].finished
    assert outputs[-1].ttft == 1.5
    assert outputs[-1].tpot == (2041.5 - 2001.5) / 4  # sample 1's 5 tokens, not sample 0's 2
