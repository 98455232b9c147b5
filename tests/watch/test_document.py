"""The page's embedded data, read back out of the HTML, equals the simulator's state at every frame.

No browser: the document is decoded from the written page and compared with a fresh run of the same
options observed by `watch_truth.Truth` (block tables, rows, Orca chunks, lengths, reference counts,
copy-on-write, preemptions) and with its `SimResult.series` (every metric shown beside a panel).
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from watch_truth import SHARED_PREFIX_BLOCKS, SMALL, build, cached_blocks, decode, run_truth, shared_prefixes

from pagedkv.simulator import compare
from pagedkv.simulator.metrics import StepSeries, StepTotals
from pagedkv.watch.document import build_document
from pagedkv.watch.frames import frame_times, steps_at
from pagedkv.watch.page import embedded_document, render_page
from pagedkv.watch.record import record

FIXTURES = Path(__file__).resolve().parents[1] / "simulator" / "fixtures"

SCENARIOS = {
    "three caches, preemption": [*SMALL, "--caches", "naive,orca-pow2,paged", "--rows", "4"],
    "parallel sampling n=2": [*SMALL, "--rows", "4", "--n", "2"],
    "beam search width 3": [*SMALL, "--rows", "6", "--beam-width", "3"],
    "prefix caching, recompute": [*SMALL, "--rows", "4", "--enable-prefix-caching"],
    "prefix caching, shared prompts": [
        "--trace",
        str(FIXTURES / "mooncake.jsonl"),
        "--enable-prefix-caching",
        "--max-model-len",
        "1024",
        "--rows",
        "4",
    ],
    "swap": [*SMALL, "--rows", "3", "--preemption-mode", "swap"],
    "chunked prefill": [
        *SMALL,
        "--caches",
        "naive,orca-oracle,paged",
        "--rows",
        "4",
        "--scheduler",
        "v1",
        "--max-num-batched-tokens",
        "96",
        "--enable-chunked-prefill",
    ],
}


def _page_document(argv: list[str], frames: int) -> dict[str, Any]:
    page = render_page(build_document(record(build(argv), frames)))
    return embedded_document(page)


@pytest.mark.parametrize("argv", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_every_step_round_trips_to_the_simulator(argv: list[str]) -> None:
    document = _page_document(argv, frames=100_000)  # more than the steps: every step is a frame
    _, results, truths = run_truth(argv)
    every_start = sorted({t for result in results.values() for t in result.series.time})
    assert document["times"] == every_start
    for cache in document["caches"]:
        result, truth = results[cache["name"]], truths[cache["name"]]
        shown = [cache["states"][i]["step"] for i in cache["frame_state"] if i >= 0]
        assert sorted(set(shown)) == list(range(len(result.series)))  # every step of this cache
        _check_states(cache, result, truth)


def test_sampled_frames_show_the_last_step_started_by_then() -> None:
    argv = [*SMALL, "--caches", "naive,orca-max,paged", "--rows", "4"]
    document = _page_document(argv, frames=37)
    _, results, truths = run_truth(argv)
    times = document["times"]
    starts = sorted({t for result in results.values() for t in result.series.time})
    assert len(times) == 37 and times[0] == starts[0] and times[-1] == starts[-1]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) - min(gaps) < 1e-9
    for cache in document["caches"]:
        result = results[cache["name"]]
        for t, index in zip(times, cache["frame_state"], strict=True):
            expected = bisect.bisect_right(result.series.time, t) - 1
            assert (cache["states"][index]["step"] if index >= 0 else -1) == expected
        _check_states(cache, result, truths[cache["name"]])


def test_frames_helpers() -> None:
    results = compare(build(SMALL).requests, build([*SMALL, "--caches", "naive,paged"]).caches)
    times = frame_times(results, 5)
    naive = results["naive"].series.time
    assert times[0] == naive[0] and times[-1] == max(naive[-1], results["paged"].series.time[-1])
    assert steps_at([naive[0] - 1, naive[0], naive[3], (naive[3] + naive[4]) / 2], naive) == [-1, 0, 3, 3]
    with pytest.raises(ValueError, match="max_frames=1"):
        frame_times(results, 1)


def test_recording_changes_nothing_the_simulator_reports() -> None:
    argv = [*SMALL, "--rows", "4", "--n", "2", "--enable-prefix-caching"]
    recording = record(build(argv), 50)
    plain = build(argv)
    for name, result in compare(plain.requests, plain.caches, plain.config).items():
        assert recording.results[name].series == result.series
        assert recording.results[name].counters == result.counters
        assert recording.results[name].finish_step == result.finish_step


def test_prefix_hits_mark_the_reused_blocks(tmp_path: Path) -> None:
    argv = shared_prefixes(tmp_path)
    document = _page_document(argv, frames=100_000)
    _, results, truths = run_truth(argv)
    (paged,) = (cache for cache in document["caches"] if cache["name"] == "paged")
    truth, placements = truths["paged"], paged["placements"]
    assert paged["prefix_caching"] is True
    # each request runs in one placement; its reused blocks are the known shared prefix, no more
    assert placements["request"] == [0, 1, 2]
    assert placements["reused"] == [SHARED_PREFIX_BLOCKS[r] for r in placements["request"]] == [0, 32, 64]
    for p in (1, 2):  # the reused blocks are physically request 0's, at the same logical positions
        reused = placements["reused"][p]
        assert placements["blocks"][p][:reused] == placements["blocks"][0][:reused]
    for state in paged["states"]:
        k = state["step"]
        (request,) = {placements["request"][p] for p in state["seqs"][::3]}  # one request at a time
        served = sum(SHARED_PREFIX_BLOCKS[r] * 16 for r in range(request + 1))  # prompt tokens so far
        assert state["prefix_hit_tokens"] == served == truth.steps[k].prefix_hit_tokens, k
    total = results["paged"].counters["prompt_hit_tokens"]
    assert paged["states"][-1]["prefix_hit_tokens"] == 512 + 1024 == total
    _check_states(paged, results["paged"], truth)


# ------------------------------------------------------------------ one cache, every state


def _check_states(cache: dict[str, Any], result: Any, truth: Any) -> None:
    series, capacity = result.series, result.capacity_slots
    reservation = [
        h - p - t - i
        for h, p, t, i in zip(series.held, series.padding, series.tokens, series.internal, strict=True)
    ]
    previous_cow = compared = 0
    for state in cache["states"]:
        k = state["step"]
        step_truth = truth.steps[k]
        where = cache["name"], k
        # the metrics beside the panel are the simulator's at that step
        assert state["time"] == series.time[k], where
        assert (state["batch"], state["queue"], state["held"], state["saved"]) == (
            series.batch[k],
            series.queue[k],
            series.held[k],
            series.saved[k],
        ), where
        one_step = StepTotals(capacity)  # the simulator's own breakdown, over this step alone
        one_step.add(*(getattr(series, column)[k] for column in StepSeries.__slots__))
        assert state["breakdown"] == one_step.breakdown(), where
        assert sum(state["breakdown"].values()) == capacity, where
        assert state["preemptions"] == step_truth.preemptions, where
        # the grid: every running sequence, exactly where the cache put it
        assert decode(cache, state) == step_truth.seqs, where
        _check_drawn_slots(cache, state, series, reservation[k])
        if cache["kind"] == "blocks":
            refs = Counter(b for table, _ in decode(cache, state).values() for b in table)
            assert [refs.get(b, 0) for b in range(cache["num_units"])] == step_truth.ref_counts, where
            cached = cached_blocks(state)
            assert len(cached) == step_truth.cached_free, where
            assert all(step_truth.ref_counts[b] == 0 for b in cached), where
            assert state["cow_copies"] == step_truth.cow_copies, where
            assert state["prefix_hit_tokens"] == step_truth.prefix_hit_tokens, where
            assert len(state["copies"]) == step_truth.cow_copies - previous_cow, where
            previous_cow = step_truth.cow_copies
            for copy_step, src, dst in state["copies"]:
                compared += _check_copy(truth, copy_step, src, dst, where)
    assert truth.steps[len(series) - 1].preemptions == sum(result.preemptions)
    if previous_cow:
        assert compared > 0, "no copy-on-write could be checked"


def _check_copy(truth: Any, step: int, src: int, dst: int, where: Any) -> bool:
    """A copy-on-write in `step` puts the copy at the logical block where a sequence of the same request
    had the source, at the end of the step before (a fork's shared block) or of this one (a prompt's
    partial block, copied as the samples are admitted). In a step that preempts, blocks change hands
    within the step, so its copies are not compared; returns whether the copy was."""

    def holders(at: int) -> dict[int, set[tuple[int, int]]]:
        out: dict[int, set[tuple[int, int]]] = {}
        if at in truth.steps:
            for (request, _), (table, _) in truth.steps[at].seqs.items():
                for i, block in enumerate(table):
                    out.setdefault(block, set()).add((request, i))
        return out

    if step > 0 and truth.steps[step].preemptions > truth.steps[step - 1].preemptions:
        return False
    now = holders(step)
    (copied,) = now[dst]
    assert copied in now.get(src, set()) | holders(step - 1).get(src, set()), (where, src, dst)
    return True


def _check_drawn_slots(cache: dict[str, Any], state: dict[str, Any], series: Any, reservation: int) -> None:
    """The states the grid draws add up to the simulator's metrics: token slots, reserved slots,
    never-used slots (internal fragmentation) and buddy rounding."""
    p, size = cache["placements"], cache["unit_slots"]
    seqs = state["seqs"]
    tokens = reserved = never = rounding = held = 0
    if cache["kind"] == "blocks":
        per_block: dict[int, int] = {}
        for j in range(0, len(seqs), 3):
            i, length, count = seqs[j : j + 3]
            final = p["final_len"][i]
            for n, block in enumerate(p["blocks"][i][:count]):
                per_block[block] = max(per_block.get(block, 0), min(size, length - n * size))
            if count == -(-final // size):
                never += count * size - final
        tokens, held = sum(per_block.values()), len(per_block) * size
        reserved = held - tokens - never
    else:
        for j in range(0, len(seqs), 3):
            i, length = seqs[j], seqs[j + 1]
            chunk = p["units"][i] * size
            tokens += length
            reserved += p["final_len"][i] - length
            never += p["claimed"][i] - p["final_len"][i]
            rounding += chunk - p["claimed"][i]
            held += chunk
    k = state["step"]
    where = cache["name"], k
    assert (tokens, never, rounding, held) == (
        series.tokens[k],
        series.internal[k],
        series.padding[k],
        series.held[k],
    ), where
    assert reserved == reservation and reserved >= 0, where
