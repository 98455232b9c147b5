"""One PNG per experiment, pagedkv's bars next to the paper's, written with matplotlib's Agg backend.

Invariant: a figure draws only numbers that are also in the JSON and the table (means, with the
min-max over seeds as error bars); the paper's are drawn hatched or as markers so the two can never be
confused; every file is written atomically (a temporary file renamed over the target). matplotlib is
imported here, lazily, so `pagedkv --help` and the experiments run without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pagedkv.outputs import atomic_path
from pagedkv.paper import reference
from pagedkv.paper.results import PaperResults, Spread
from pagedkv.simulator.metrics import BREAKDOWN_COLORS


def write_figures(results: PaperResults, out_dir: str | Path) -> list[Path]:
    """Write fig2.png, fig13a.png, fig15.png, fig18b.png (those that were run) into `out_dir`, whose
    parent exists (`pagedkv.outputs.check_output_dir` checked it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(exist_ok=True)
    drawers = (
        ("fig2", results.fig2, _fig2),
        ("fig12", results.fig12, _fig12),
        ("fig13a", results.fig13a, _fig13a),
        ("fig15", results.fig15, _fig15),
        ("fig18b", results.fig18b, _fig18b),
    )
    written = []
    for name, data, draw in drawers:
        if not data:
            continue
        fig = draw(plt, results)
        path = out / f"{name}.png"
        try:
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        finally:
            plt.close(fig)
        written.append(path)
    return written


def _fig2(plt: Any, results: PaperResults) -> Any:
    fig, ax = plt.subplots(figsize=(9, 4.2))
    labels = []
    for i, (system, result) in enumerate(results.fig2.items()):
        paper = reference.FIG2[system]
        for offset, values, hatch in (
            (-0.2, {c: result.category(c) for c in reference.CATEGORIES}, None),
            (0.2, paper, "//"),
        ):
            bottom = 0.0
            for category in reference.CATEGORIES:
                value = values[category]
                if value is None:
                    continue
                ax.bar(
                    i + offset,
                    value,
                    0.38,
                    bottom=bottom,
                    color=BREAKDOWN_COLORS[category],
                    hatch=hatch,
                    edgecolor="black",
                    linewidth=0.3,
                    label=reference.CATEGORY_LABELS[category] if i == 0 and hatch is None else None,
                )
                if value >= 6:
                    ax.text(
                        i + offset, bottom + value / 2, f"{value:.1f}", ha="center", va="center", fontsize=7
                    )
                bottom += value
        labels.append(f"{reference.SYSTEM_LABELS[system]}\npagedkv | paper")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("% of KV cache capacity")
    ax.set_title("Fig. 2: KV cache usage (left: pagedkv, mean over seeds; right hatched: paper)", fontsize=10)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    return fig


FIG12_STYLE = {  # the artifact's plot_fig12.py colours and markers
    "orca-max": ("red", "x"),
    "orca-pow2": ("orange", "^"),
    "orca-oracle": ("green", "s"),
    "paged": ("blue", "o"),
}


def _fig12(plt: Any, results: PaperResults) -> Any:
    panels = results.fig12
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
    threshold = float(results.setting["fig12"]["threshold_s"])  # type: ignore[index]
    for ax, (name, panel) in zip(axes[0], panels.items(), strict=True):
        for system, result in panel.systems.items():
            color, marker = FIG12_STYLE[system]
            rates = [point[0] for point in result.curve]
            ax.plot(
                rates,
                [point[1] for point in result.curve],
                color=color,
                marker=marker,
                markersize=4,
                lw=1.1,
                label=f"{reference.SYSTEM_LABELS[system]}: {result.rate:.2f} req/s"
                if result.rate
                else system,
            )
            ax.fill_between(
                rates, [p[2] for p in result.curve], [p[3] for p in result.curve], color=color, alpha=0.15
            )
            if result.rate is not None:
                ax.axvline(result.rate, color=color, ls=":", lw=0.8)
        ax.axhline(threshold, color="black", ls="--", lw=0.9)
        ax.set_ylim(0, 2 * threshold)
        ax.set_xlim(left=0)
        ratios = ", ".join(f"{r.pooled:.2f}x {reference.SYSTEM_LABELS[s]}" for s, r in panel.ratios.items())
        ax.set_title(f"{name}: vLLM sustains {ratios}", fontsize=7)
        ax.set_xlabel("request rate (req/s)")
        ax.legend(fontsize=6, loc="upper left")
        ax.grid(ls=":", lw=0.5)
    axes[0][0].set_ylabel("normalized latency (s/token)")
    fig.suptitle(
        f"Fig. 12: ShareGPT, mean over seeds (band: lowest-highest seed); dashed: {threshold:g} s/token, "
        "dotted: the rate each system sustains",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def _fig13a(plt: Any, results: PaperResults) -> Any:
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    systems = list(results.fig13a)
    for i, system in enumerate(systems):
        spread, paper = results.fig13a[system].mean_batch, reference.FIG13A[system]
        ours = spread.mean
        ax.bar(i - 0.2, ours, 0.38, color="tab:blue", label="pagedkv" if i == 0 else None)
        ax.errorbar(i - 0.2, ours, yerr=_yerr(spread), color="black", capsize=3, lw=0.8)
        ax.bar(
            i + 0.2,
            paper,
            0.38,
            color="white",
            edgecolor="tab:blue",
            hatch="//",
            label="paper" if i == 0 else None,
        )
        ax.text(i - 0.2, spread.high, f"{ours:.1f}", ha="center", va="bottom", fontsize=7)
        ax.text(i + 0.2, paper, f"{paper:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(systems)), [reference.SYSTEM_LABELS[s] for s in systems], fontsize=8)
    ax.set_ylabel("batched requests")
    ax.set_title("Fig. 13a: average batch, ShareGPT", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _fig15(plt: Any, results: PaperResults) -> Any:
    fig, axes = plt.subplots(1, len(results.fig15), figsize=(4.5 * len(results.fig15), 3.5), squeeze=False)
    for ax, (mode, by_width) in zip(axes[0], results.fig15.items(), strict=True):
        widths = list(by_width)
        xs = range(len(widths))
        savings = [by_width[w].saving.mean for w in widths]
        ax.bar(xs, savings, 0.5, color="tab:blue", label="pagedkv, ShareGPT")
        for x, w in zip(xs, widths, strict=True):
            saving = by_width[w].saving
            ax.errorbar(x, saving.mean, yerr=_yerr(saving), color="black", capsize=3, lw=0.8)
            ax.text(x + 0.27, saving.mean, f"{saving.mean:.1f}", ha="left", va="center", fontsize=7)
        alpaca = [reference.FIG15_ALPACA[mode].get(w) for w in widths]
        ax.plot(xs, alpaca, "kD", label="paper, Alpaca")
        low, high = reference.FIG15_SHAREGPT_RANGE[mode]
        ax.axhspan(low, high, color="tab:orange", alpha=0.2, zorder=0, label="paper, ShareGPT range")
        ax.set_xticks(list(xs), [str(w) for w in widths])
        ax.set_xlabel("# output sequences" if mode == "parallel" else "beam width")
        ax.set_ylabel("memory saving (%)")
        ax.set_title(f"Fig. 15: {'parallel sampling' if mode == 'parallel' else 'beam search'}", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _fig18b(plt: Any, results: PaperResults) -> Any:
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    sizes = list(results.fig18b)
    ax.errorbar(
        sizes,
        [results.fig18b[s].waste.mean for s in sizes],
        yerr=[
            [r.waste.mean - r.waste.low for r in results.fig18b.values()],
            [r.waste.high - r.waste.mean for r in results.fig18b.values()],
        ],
        fmt="o-",
        color="tab:red",
        capsize=3,
        label="waste (block padding)",
    )
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.axvspan(16, 128, color="tab:green", alpha=0.12, zorder=0, label="paper: best block sizes")
    ax.set_xlabel("block size (tokens)")
    ax.set_ylabel("% of KV cache capacity")
    ax.set_title("Fig. 18b: vLLM (paged) waste vs block size, ShareGPT", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _yerr(spread: Spread) -> list[list[float]]:
    """Error bar from the mean down to the lowest seed and up to the highest."""
    return [[spread.mean - spread.low], [spread.high - spread.mean]]
