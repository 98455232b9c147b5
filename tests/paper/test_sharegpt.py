"""The paper's ShareGPT stream: its own lengths, first-N in a seeded shuffle, Poisson arrivals."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from pagedkv.errors import InvalidArgument
from pagedkv.paper.sharegpt import TRACE_NAME, load_sharegpt, poisson_stream
from pagedkv.simulator.workload import Request

REPO = Path(__file__).resolve().parents[2]


def _pool(count: int) -> list[Request]:
    return [Request(i, 0.0, 1 + i % 50, 1 + i % 7) for i in range(count)]


def test_the_trace_gives_the_artifacts_filtered_lengths(real_trace: Callable[[str], Path]) -> None:
    pool = load_sharegpt(real_trace(TRACE_NAME))
    assert len(pool) == 79_725  # prompt + output < 2048, as the artifact's trace.py keeps
    assert sum(r.prompt_len for r in pool) / len(pool) == pytest.approx(161.18, abs=0.01)
    assert sum(r.output_len for r in pool) / len(pool) == pytest.approx(338.00, abs=0.01)
    assert max(r.total_len for r in pool) == 2047


def test_stream_carries_the_first_lengths_of_the_pool_in_a_shuffle() -> None:
    pool = _pool(5_000)
    stream = poisson_stream(pool, rate=4.0, duration=100.0, seed=3)
    lengths = Counter((r.prompt_len, r.output_len) for r in stream)
    assert lengths == Counter((r.prompt_len, r.output_len) for r in pool[: len(stream)])
    assert [(r.prompt_len, r.output_len) for r in stream] != [
        (r.prompt_len, r.output_len) for r in pool[: len(stream)]
    ]


def test_stream_is_poisson_within_the_duration_and_reproducible() -> None:
    pool = _pool(20_000)
    stream = poisson_stream(pool, rate=4.0, duration=900.0, seed=0)
    assert 3_300 < len(stream) < 3_900  # 3,600 expected
    assert stream[0].arrival_time == 0.0 and stream[-1].arrival_time < 900.0
    assert [r.request_id for r in stream] == list(range(len(stream)))
    assert stream == poisson_stream(pool, rate=4.0, duration=900.0, seed=0)
    assert stream != poisson_stream(pool, rate=4.0, duration=900.0, seed=1)


def test_too_small_a_pool_or_duration_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="needs more than the 100 length pairs"):
        poisson_stream(_pool(100), rate=4.0, duration=900.0)
    with pytest.raises(InvalidArgument, match="duration=0"):
        poisson_stream(_pool(100), rate=4.0, duration=0)
