"""The side-by-side table `pagedkv paper` prints: pagedkv's number next to the paper's, and why they differ.

Invariant: the table shows exactly the numbers `PaperResults.to_json` writes (same rounding), a goal
mark next to every number the paper prints, and the notes that explain every difference.
"""

from __future__ import annotations

from pagedkv.paper import goals, reference
from pagedkv.paper.config import PaperConfig
from pagedkv.paper.results import PaperResults, sharegpt_paper_value

_OK = {True: "ok", False: "MISS", None: ""}


def format_report(results: PaperResults, config: PaperConfig) -> str:
    """Header (setting, time model, workload), one section per figure run, then the notes."""
    lines = [
        "PagedAttention paper (Kwon et al., SOSP 2023) memory figures: paper vs pagedkv",
        f"setting:    {config.setting.describe()}",
        f"time model: {config.time_model.describe()}",
        f"workload:   {results.setting.get('workload', '')}",
    ]
    sections = (
        (results.fig2, _fig2),
        (results.fig13a, _fig13a),
        (results.fig15, _fig15),
        (results.fig18b, _fig18b),
    )
    for data, section in sections:
        if data:
            lines += ["", *section(results, config)]
    if results.notes:
        lines += ["", "why numbers differ from the paper:"]
        lines += [f"  - {name}: {text}" for name, text in results.notes.items()]
    lines += ["", f"wall time: {results.wall_seconds:.1f} s"]
    return "\n".join(lines)


def _fig2(results: PaperResults, config: PaperConfig) -> list[str]:
    start, end = config.window
    head = f"{'':15}" + "".join(f"{reference.CATEGORY_LABELS[c]:>24}" for c in reference.CATEGORIES)
    sub = f"{'system':15}" + f"{'pagedkv   paper  goal':>24}" * len(reference.CATEGORIES) + f"{'batch':>8}"
    lines = [
        f"Figure 2: KV cache usage, % of capacity, ShareGPT at {config.fig2_rate:g} req/s, "
        f"{config.duration:g} s, mean over iterations in {start:g}-{end:g} s (goal: within "
        f"{goals.FIG2_POINTS:g} points)",
        head,
        sub,
    ]
    for system, result in results.fig2.items():
        cells = []
        for category in reference.CATEGORIES:
            measured = result.category(category)
            paper = reference.FIG2[system][category]
            cells.append(_cell(measured, paper, _OK[goals.fig2_ok(measured, paper)]))
        lines.append(f"{reference.SYSTEM_LABELS[system]:15}" + "".join(cells) + f"{result.mean_batch:8.2f}")
    return lines


def _fig13a(results: PaperResults, config: PaperConfig) -> list[str]:
    lines = [
        f"Figure 13a: average batched requests, ShareGPT at {config.fig13a_rate:g} req/s "
        f"(goal: within {goals.FIG13A_RELATIVE:.0%})",
        f"{'system':15}{'pagedkv':>9}{'paper':>8}{'diff':>8}{'goal':>6}{'preempted':>11}",
    ]
    for system, result in results.fig13a.items():
        paper = reference.FIG13A[system]
        diff = (result.mean_batch - paper) / paper
        mark = _OK[goals.fig13a_ok(result.mean_batch, paper)]
        lines.append(
            f"{reference.SYSTEM_LABELS[system]:15}{result.mean_batch:9.2f}{paper:8.2f}{diff:+8.1%}{mark:>6}"
            f"{result.preemptions:11,}"
        )
    return lines


def _fig15(results: PaperResults, config: PaperConfig) -> list[str]:
    lines = [
        f"Figure 15: KV blocks saved by sharing, % of blocks without sharing, vLLM, ShareGPT at "
        f"{config.fig15_rate:g} req/s (paper: Alpaca per width; ShareGPT only as a range)",
        f"{'':15}{'pagedkv':>9}{'paper ShareGPT':>16}{'paper Alpaca':>14}{'seqs':>8}",
    ]
    for mode, by_width in results.fig15.items():
        low, high = reference.FIG15_SHAREGPT_RANGE[mode]
        for width, result in by_width.items():
            sharegpt = sharegpt_paper_value(mode, width)
            shown = f"{sharegpt:.1f}" if sharegpt is not None else f"({low:g}-{high:g})"
            label = f"{mode} {'n' if mode == 'parallel' else 'k'}={width}"
            lines.append(
                f"{label:15}{result.saving:9.2f}{shown:>16}{reference.FIG15_ALPACA[mode][width]:14.2f}"
                f"{result.mean_batch:8.1f}"
            )
    if {"parallel", "beam"} <= results.fig15.keys():
        savings = {mode: {w: r.saving for w, r in by.items()} for mode, by in results.fig15.items()}
        ok = goals.fig15_ranking_ok(savings["parallel"], savings["beam"])
        lines.append(f"ranking (grows with width, beam > parallel) as in the paper: {_OK[ok] or 'n/a'}")
    return lines


def _fig18b(results: PaperResults, config: PaperConfig) -> list[str]:
    lines = [
        f"Figure 18b: vLLM waste vs block size, ShareGPT at {config.fig2_rate:g} req/s "
        "(paper: 16-128 best; larger blocks waste more)",
        f"{'block size':>10}{'waste %':>9}{'held %':>8}{'batch':>8}{'finished':>10}",
    ]
    for size, result in results.fig18b.items():
        lines.append(
            f"{size:10}{result.waste:9.2f}{result.held:8.2f}{result.mean_batch:8.2f}{result.finished:10,}"
        )
    waste = {size: r.waste for size, r in results.fig18b.items()}
    if sum(1 for size in waste if size >= 16) >= 2:
        lines.append(
            f"ranking (from 16 up, larger blocks waste more) as in the paper: "
            f"{_OK[goals.fig18b_ranking_ok(waste)]}"
        )
    return lines


def _cell(measured: float, paper: float | None, mark: str) -> str:
    shown = f"{paper:.1f}" if paper is not None else "-"
    return f"{measured:10.1f}{shown:>8}{mark:>6}"
