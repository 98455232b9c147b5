"""The four experiments, run on the simulator's caches and step loop exactly as the paper set them up.

Invariant: every experiment serves the same seeded ShareGPT stream to every system it compares, takes
its numbers from the simulator's per-iteration series over the same time window, and averages them
over `PaperConfig.seeds` independent streams (arrivals and length order), so a figure is never the
luck of one draw.

Systems (the artifact's, sosp-ae-39/sosp-ae-astra):
* ``orca_max`` / ``orca_pow2`` / ``orca_oracle``: `OrcaCache` reserving ``min(prompt + estimate, 2048)``
  slots in 16-token blocks placed by a buddy allocator; FCFS admission that stops at the first request
  that does not fit; never preempts.
* ``vllm``: `PagedCache` (the core `BlockManager`), 1 % watermark at admission, preempting the newest
  request by recompute when a block is needed and none is free.
"""

from __future__ import annotations

from collections.abc import Callable
from statistics import fmean

from pagedkv.paper.config import PaperConfig
from pagedkv.paper.reference import CATEGORIES, SYSTEMS
from pagedkv.paper.results import BlockSizeResult, Breakdown, SharingResult
from pagedkv.paper.setting import PaperSetting
from pagedkv.paper.sharegpt import poisson_stream
from pagedkv.simulator import KVCache, OrcaCache, PagedCache, SimConfig, SimResult, simulate
from pagedkv.simulator.workload import Request

Progress = Callable[[str], None]
"""Called with a short line (``"fig2 seed 0: orca_max"``) before each simulation."""


def system_cache(system: str, setting: PaperSetting) -> KVCache:
    """A fresh cache for one of the paper's systems, holding `setting.num_slots` token slots."""
    if system == "vllm":
        return PagedCache(setting.num_slots, setting.block_size, watermark=setting.watermark, name=system)
    policy = system.removeprefix("orca_")
    return OrcaCache(
        setting.num_slots, setting.model.max_seq_len, policy, block_size=setting.block_size, name=system
    )


def run_breakdown(
    config: PaperConfig, pool: list[Request], rate: float, label: str, progress: Progress | None = None
) -> dict[str, Breakdown]:
    """Fig. 2 / Fig. 13a: every system on the ShareGPT stream at `rate`, means over the window."""
    per_seed: dict[str, list[Breakdown]] = {system: [] for system in SYSTEMS}
    for seed in config.seeds:
        requests = poisson_stream(pool, rate, config.duration, seed)
        for system in SYSTEMS:
            _tell(progress, f"{label} seed {seed}: {system}")
            result = _simulate(config, requests, system_cache(system, config.setting), seed)
            per_seed[system].append(_breakdown(result, config.window))
    return {system: _mean_breakdown(runs) for system, runs in per_seed.items()}


def run_sharing(
    config: PaperConfig, pool: list[Request], progress: Progress | None = None
) -> dict[str, dict[int, SharingResult]]:
    """Fig. 15: vLLM with every request sampling n sequences (parallel) or searching with width n (beam)."""
    results: dict[str, dict[int, SharingResult]] = {"parallel": {}, "beam": {}}
    streams = {seed: poisson_stream(pool, config.fig15_rate, config.duration, seed) for seed in config.seeds}
    for mode in results:
        for width in config.fig15_widths:
            runs = []
            for seed, requests in streams.items():
                _tell(progress, f"fig15 seed {seed}: {mode} {width}")
                sampling = {"n": width} if mode == "parallel" else {"beam_width": width}
                result = _simulate(config, requests, system_cache("vllm", config.setting), seed, **sampling)
                runs.append(_sharing(result, config.window))
            results[mode][width] = SharingResult(
                saving=fmean(r.saving for r in runs),
                mean_batch=fmean(r.mean_batch for r in runs),
                iterations=sum(r.iterations for r in runs),
                preemptions=sum(r.preemptions for r in runs),
            )
    return results


def run_block_sizes(
    config: PaperConfig, pool: list[Request], progress: Progress | None = None
) -> dict[int, BlockSizeResult]:
    """Fig. 18b: vLLM at each block size, same KV bytes, under the Fig. 2 load."""
    per_size: dict[int, list[BlockSizeResult]] = {size: [] for size in config.fig18b_block_sizes}
    for seed in config.seeds:
        requests = poisson_stream(pool, config.fig2_rate, config.duration, seed)
        for size in config.fig18b_block_sizes:
            _tell(progress, f"fig18b seed {seed}: block size {size}")
            cache = system_cache("vllm", config.setting.with_block_size(size))
            per_size[size].append(_waste(_simulate(config, requests, cache, seed), config.window))
    return {
        size: BlockSizeResult(
            waste=fmean(r.waste for r in runs),
            held=fmean(r.held for r in runs),
            mean_batch=fmean(r.mean_batch for r in runs),
            finished=round(fmean(r.finished for r in runs)),
            iterations=sum(r.iterations for r in runs),
        )
        for size, runs in per_size.items()
    }


def _simulate(
    config: PaperConfig, requests: list[Request], cache: KVCache, seed: int, **sampling: int
) -> SimResult:
    sim = SimConfig(
        iteration_time=config.time_model,
        seed=seed,
        max_time=config.duration,
        beam_prune_prob=config.beam_prune_prob,
        **sampling,
    )
    return simulate(requests, cache, sim)


def _breakdown(result: SimResult, window: tuple[float, float]) -> Breakdown:
    summary = result.summary(window)
    shares = {name: summary[f"{name}_pct_mean"] for name in CATEGORIES}
    shares["external"] += summary["free_pct_mean"]  # the paper's "external & other" includes idle memory
    start, end = window
    times = [t for t in result.series.time if start <= t < end]
    return Breakdown(
        **shares,
        mean_batch=summary["batch_mean"],
        mean_queue=summary["queue_mean"],
        mean_iteration_ms=1e3 * (times[-1] - times[0]) / max(len(times) - 1, 1),
        iterations=summary["steps"],
        preemptions=summary["preemptions"],
        finished=summary["requests_finished"],
    )


def _mean_breakdown(runs: list[Breakdown]) -> Breakdown:
    return Breakdown(
        token_states=fmean(r.token_states for r in runs),
        reservation=fmean(r.reservation for r in runs),
        internal=fmean(r.internal for r in runs),
        external=fmean(r.external for r in runs),
        mean_batch=fmean(r.mean_batch for r in runs),
        mean_queue=fmean(r.mean_queue for r in runs),
        mean_iteration_ms=fmean(r.mean_iteration_ms for r in runs),
        iterations=sum(r.iterations for r in runs),
        preemptions=round(fmean(r.preemptions for r in runs)),
        finished=round(fmean(r.finished for r in runs)),
    )


def _sharing(result: SimResult, window: tuple[float, float]) -> SharingResult:
    """The artifact's measure: ``1 - 1 / mean(logical / physical blocks)`` over the window's iterations.

    Logical blocks are what the sequences would hold alone (held + saved slots), physical the blocks
    actually held; the ratio is averaged per iteration, as the authors' plotting script does.
    """
    series = result.series
    start, end = window
    ratios = [
        (held + saved) / held
        for time, held, saved in zip(series.time, series.held, series.saved, strict=True)
        if start <= time < end and held
    ]
    summary = result.summary(window)
    return SharingResult(
        saving=100.0 * (1.0 - 1.0 / fmean(ratios)),
        mean_batch=summary["batch_mean"],
        iterations=len(ratios),
        preemptions=summary["preemptions"],
    )


def _waste(result: SimResult, window: tuple[float, float]) -> BlockSizeResult:
    """Slots held in blocks but holding no token (partly filled last blocks), % of capacity."""
    summary = result.summary(window)
    return BlockSizeResult(
        waste=summary["held_pct_mean"] - summary["token_states_pct_mean"],
        held=summary["held_pct_mean"],
        mean_batch=summary["batch_mean"],
        finished=summary["requests_finished"],
        iterations=summary["steps"],
    )


def _tell(progress: Progress | None, line: str) -> None:
    if progress is not None:
        progress(line)
