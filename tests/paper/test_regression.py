"""Fidelity regression: the paper's figures, reproduced on the simulator, stay where the paper put them.

Figures 2 and 13a run in the full setting (900 s, the default ten seeds, in a two-process pool) and
their ten-seed means must meet the issue's goals: every Figure 2 category within 3 points, Figure 13a
within 15 %. Figures 15 and 18b run on a shorter stream (360 s, one seed) and must keep the paper's
rankings and stay in bands wide enough for that noise but narrow enough to catch a broken sharing or
block model.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import pytest

from pagedkv.paper import reference
from pagedkv.paper.run import run_paper
from pagedkv.paper.setting import PaperConfig

SHORT = {"duration": 360.0, "window": (120.0, 360.0), "seeds": (0,)}


@pytest.fixture(scope="module")
def full(trace: str):  # type: ignore[no-untyped-def]
    with ProcessPoolExecutor(max_workers=2) as pool:
        return run_paper(PaperConfig(figures=("fig2", "fig13a")), trace, mapper=pool.map)


def test_fig2_every_category_within_3_points_on_the_ten_seed_mean(full) -> None:  # type: ignore[no-untyped-def]
    for system in reference.SYSTEMS:
        result = full.fig2[system]
        for category in reference.CATEGORIES:
            paper = reference.FIG2[system][category]
            assert reference.fig2_ok(result.category(category), paper) is not False, (
                system,
                category,
                result,
            )
    assert full.fig2["orca-max"].mean_batch.mean == 7.0  # 7 chunks of 2048 tokens fit in 15.7K slots
    assert full.fig2["orca-oracle"].category("internal") == 0.0
    assert full.fig2["paged"].preemptions > 0  # 4 req/s overloads vLLM too: it preempts, Orca never does
    assert all(full.fig2[s].preemptions == 0 for s in reference.ORCA)
    # independent of how the breakdown is computed: Orca (Max) always runs 7 requests of 2,048 reserved
    # slots each, so tokens + reservation + internal fragmentation = 7 x 2048 of the 15,728 slots
    maximum = full.fig2["orca-max"]
    held = sum(maximum.category(c) for c in ("token_states", "reservation", "internal"))
    assert held == pytest.approx(100 * 7 * 2048 / 15_728, abs=0.01)


def test_fig13a_batch_sizes_within_15_percent_on_the_ten_seed_mean(full) -> None:  # type: ignore[no-untyped-def]
    for system in reference.SYSTEMS:
        assert reference.fig13a_ok(full.fig13a[system].mean_batch.mean, reference.FIG13A[system]), system
    batches = [full.fig13a[system].mean_batch.mean for system in reference.SYSTEMS]
    assert batches == sorted(batches)  # Max < Pow2 < Oracle < vLLM, as in the paper
    assert len(full.setting["seeds"]) == 10  # type: ignore[arg-type]


def test_fig15_sharing_keeps_the_papers_ranking(trace: str) -> None:
    results = run_paper(PaperConfig(**SHORT, figures=("fig15",), fig15_widths=(2, 6)), trace)
    parallel = {w: r.saving.mean for w, r in results.fig15["parallel"].items()}
    beam = {w: r.saving.mean for w, r in results.fig15["beam"].items()}
    assert reference.fig15_ranking_ok(parallel, beam), (parallel, beam)
    # parallel samples share only the prompt's full blocks: ShareGPT's paper range is 16.2-30.5 %
    assert 10.0 < parallel[2] < 25.0 and 15.0 < parallel[6] < 40.0
    # beams share their common ancestry: more than the prompt, never more than 1 - 1/k
    assert 40.0 < beam[2] < 50.0 and 65.0 < beam[6] < 100 * (1 - 1 / 6)


def test_fig18b_larger_blocks_waste_more(trace: str) -> None:
    results = run_paper(PaperConfig(**SHORT, figures=("fig18b",), fig18b_block_sizes=(8, 16, 64, 256)), trace)
    waste = {size: r.waste.mean for size, r in results.fig18b.items()}
    assert reference.fig18b_ranking_ok(waste, from_size=8), waste
    # a running sequence's last block is half empty on average: ~B/2 slots a sequence
    assert 0.5 < waste[16] < 3.0 and waste[256] > 15.0
    assert results.fig18b[256].mean_batch < results.fig18b[16].mean_batch  # the padding costs batch size


@pytest.fixture(scope="module")
def fig12(trace: str):  # type: ignore[no-untyped-def]
    """Fig. 12's OPT-13B panel on 3 seeds (the default is 10) with the 0.5 and 2 s/token sensitivity
    searches: about 45 s in a two-process pool, where all ten seeds and three panels take minutes."""
    config = PaperConfig(figures=("fig12",), fig12_panels=("OPT-13B",), seeds=(0, 1, 2))
    with ProcessPoolExecutor(max_workers=2) as pool:
        return config, run_paper(config, trace, mapper=pool.map)


def test_fig12_vllm_sustains_the_papers_multiple_of_orcas_rate(fig12) -> None:  # type: ignore[no-untyped-def]
    _, results = fig12
    panel = results.fig12["OPT-13B"]
    for system, (low, high) in reference.FIG12_RATIOS.items():
        assert low <= panel.ratios[system].pooled <= high, (system, panel.ratios[system])
    rates = [panel.systems[system].rate for system in reference.SYSTEMS]
    assert rates == sorted(rates) and len(set(rates)) == 4  # Max < Pow2 < Oracle < vLLM, as in the paper
    for system, result in panel.systems.items():
        assert result.next_rate / result.rate <= 1.02, system  # bisected to the 2 % tolerance
        curve = [latency for _, latency, _, _ in result.curve]
        assert curve[0] < 0.2 and max(curve) > 1.0, system  # from light load to past the knee
        assert result.seed_rates is not None and result.seed_rates.low <= result.rate * 1.1
    assert panel.systems["orca-max"].batch_mean == pytest.approx(7.0, abs=0.1)  # 7 chunks of 2,048 slots


def test_fig12_json_and_report_carry_the_ratios_and_their_sensitivity(fig12) -> None:  # type: ignore[no-untyped-def]
    from pagedkv.paper.report import format_report

    config, results = fig12
    data = results.to_json()["fig12"]["OPT-13B"]
    assert data["ratios"]["orca-oracle"]["paper"] == [1.7, 2.7] and data["ratios"]["orca-oracle"]["goal"]
    assert data["ratios"]["orca-pow2"]["paper"] is None and data["ratios"]["orca-pow2"]["goal"] is None
    assert set(data["sensitivity"]["threshold_s"]) == {"1", "0.5", "2"}
    for threshold, entry in data["sensitivity"]["threshold_s"].items():
        rates = entry["rates"]
        assert rates["orca-max"] < rates["orca-oracle"] < rates["paged"], threshold
    # a looser threshold sustains more of every system's rate
    loose, tight = data["sensitivity"]["threshold_s"]["2"], data["sensitivity"]["threshold_s"]["0.5"]
    assert all(loose["rates"][s] > tight["rates"][s] for s in reference.SYSTEMS)
    text = format_report(results, config)
    assert "Figure 12: the highest request rate each system sustains" in text
    assert "threshold sensitivity, vLLM / Oracle / Max: 1 s: " in text
