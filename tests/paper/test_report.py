"""The JSON keys, the side-by-side table and the goal checks, on hand-made results (no simulation)."""

from __future__ import annotations

import json

from pagedkv.paper import goals, reference
from pagedkv.paper.config import PaperConfig
from pagedkv.paper.report import format_report
from pagedkv.paper.results import BlockSizeResult, Breakdown, PaperResults, SharingResult


def _breakdown(token: float, reservation: float, internal: float, batch: float = 10.0) -> Breakdown:
    external = 100.0 - token - reservation - internal
    return Breakdown(token, reservation, internal, external, batch, 1.0, 40.0, 100, 0, 10)


def _results() -> PaperResults:
    fig2 = {
        "orca_max": _breakdown(20.0, 13.0, 58.0, 7.0),
        "orca_pow2": _breakdown(27.0, 18.0, 14.0),
        "orca_oracle": _breakdown(30.0, 25.0, 0.0),  # token states 8.2 points below the paper's 38.2
        "vllm": _breakdown(96.0, 1.5, 0.1),
    }
    batches = (7.0, 9.5, 13.0, 20.0)
    fig13a = {s: _breakdown(0, 0, 0, b) for s, b in zip(reference.SYSTEMS, batches, strict=True)}
    sharing = {
        w: SharingResult(saving=s, mean_batch=40, iterations=100, preemptions=0)
        for w, s in ((2, 16), (4, 20))
    }
    beams = {
        w: SharingResult(saving=s, mean_batch=60, iterations=100, preemptions=0)
        for w, s in ((2, 45), (4, 70))
    }
    blocks = {size: BlockSizeResult(size / 10, 97.0, 30.0, 1_000, 100) for size in (8, 16, 32)}
    return PaperResults(
        setting={"workload": "hand-made"},
        fig2=fig2,
        fig13a=fig13a,
        fig15={"parallel": sharing, "beam": beams},
        fig18b=blocks,
        notes={"fig2": "a note"},
        wall_seconds=1.25,
    )


def test_json_has_the_issues_keys_with_the_papers_values_alongside() -> None:
    data = json.loads(json.dumps(_results().to_json()))
    for system in reference.SYSTEMS:
        for category in reference.CATEGORIES:
            assert set(data["fig2"][system][category]) == {"pagedkv", "paper"}
    assert data["fig2"]["orca_max"]["internal"] == {"pagedkv": 58.0, "paper": 57.3}
    assert data["fig2"]["vllm"]["token_states"] == {"pagedkv": 96.0, "paper": 96.3}
    assert data["fig2"]["vllm"]["external"]["paper"] is None  # the paper labels only token states
    assert data["fig13a"]["vllm"] == {"pagedkv": 20.0, "paper": 30.42}
    assert data["fig15"]["parallel"]["2"] == {"pagedkv": 16.0, "paper": 16.2, "paper_alpaca": 6.09}
    assert data["fig15"]["beam"]["4"] == {"pagedkv": 70.0, "paper": None, "paper_alpaca": 53.13}
    assert data["fig18b"]["16"] == {"pagedkv": 1.6, "paper": None, "mean_batch": 30.0}
    assert data["notes"] == {"fig2": "a note"} and data["wall_seconds"] == 1.25


def test_table_shows_both_numbers_and_marks_misses() -> None:
    text = format_report(_results(), PaperConfig())
    oracle = next(line for line in text.splitlines() if line.startswith("Orca (Oracle)"))
    assert "30.0" in oracle and "38.2" in oracle and "MISS" in oracle
    maximum = next(line for line in text.splitlines() if line.startswith("Orca (Max)") and "57.3" in line)
    assert "MISS" not in maximum
    vllm_13a = next(line for line in text.splitlines() if line.startswith("vLLM") and "30.42" in line)
    assert "-34.3%" in vllm_13a and "MISS" in vllm_13a
    assert "ranking (grows with width, beam > parallel) as in the paper: ok" in text
    assert "ranking (from 16 up, larger blocks waste more) as in the paper: ok" in text
    assert "- fig2: a note" in text and "wall time: 1.2 s" in text


def test_goal_predicates() -> None:
    assert goals.fig2_ok(41.0, 38.2) and not goals.fig2_ok(41.3, 38.2) and goals.fig2_ok(1.0, None) is None
    assert goals.fig13a_ok(26.0, 30.42) and not goals.fig13a_ok(25.8, 30.42)
    assert goals.fig15_ranking_ok({2: 1, 4: 2, 6: 3}, {2: 4, 4: 5, 6: 6})
    assert not goals.fig15_ranking_ok({2: 1, 4: 3, 6: 2}, {2: 4, 4: 5, 6: 6})  # n=6 below n=4
    assert not goals.fig15_ranking_ok({2: 5, 4: 6}, {2: 4, 4: 7})  # beam below parallel at width 2
    assert goals.fig18b_ranking_ok({1: 5.0, 8: 0.1, 16: 1.0, 64: 4.0})  # below 16 is not ranked
    assert not goals.fig18b_ranking_ok({16: 1.0, 32: 3.0, 64: 2.0})
