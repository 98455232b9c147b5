"""Run the selected experiments of a `PaperConfig` and collect them, with notes, into `PaperResults`.

Invariant: the ShareGPT pool is loaded once and every experiment draws its streams from it, so all
figures of one run rest on the same lengths; the wall time covers loading, simulating and explaining.
"""

from __future__ import annotations

import os
import time

from pagedkv.paper import experiments, notes
from pagedkv.paper.config import PaperConfig
from pagedkv.paper.results import PaperResults
from pagedkv.paper.sharegpt import MAX_TOTAL_LEN, default_trace_path, load_sharegpt


def run_paper(
    config: PaperConfig,
    trace: str | os.PathLike[str] | None = None,
    progress: experiments.Progress | None = None,
) -> PaperResults:
    """Everything `pagedkv paper` prints: the figures in `config.figures`, notes, setting, wall time."""
    started = time.perf_counter()
    path = trace if trace is not None else default_trace_path()
    pool = load_sharegpt(path)
    results = PaperResults(setting=_setting(config, path, len(pool)))
    if "fig2" in config.figures:
        results.fig2 = experiments.run_breakdown(config, pool, config.fig2_rate, "fig2", progress)
    if "fig13a" in config.figures:
        results.fig13a = experiments.run_breakdown(config, pool, config.fig13a_rate, "fig13a", progress)
    if "fig15" in config.figures:
        results.fig15 = experiments.run_sharing(config, pool, progress)
    if "fig18b" in config.figures:
        results.fig18b = experiments.run_block_sizes(config, pool, progress)
    results.notes = notes.explain(results, config)
    results.wall_seconds = time.perf_counter() - started
    return results


def _setting(config: PaperConfig, path: str | os.PathLike[str], pairs: int) -> dict[str, object]:
    setting = config.setting
    return {
        "description": setting.describe(),
        "time_model": config.time_model.describe(),
        "workload": (
            f"ShareGPT lengths of the paper's artifact ({pairs:,} pairs with prompt + output "
            f"< {MAX_TOTAL_LEN}, {os.fspath(path)}), Poisson arrivals for {config.duration:g} s, "
            f"measured over {config.window[0]:g}-{config.window[1]:g} s, mean of seeds {list(config.seeds)}"
        ),
        "kv_slots": setting.num_slots,
        "num_blocks": setting.num_blocks,
        "block_size": setting.block_size,
        "duration_s": config.duration,
        "window_s": list(config.window),
        "seeds": list(config.seeds),
        "rates": {"fig2": config.fig2_rate, "fig13a": config.fig13a_rate, "fig15": config.fig15_rate},
        "beam_prune_prob": config.beam_prune_prob,
    }
