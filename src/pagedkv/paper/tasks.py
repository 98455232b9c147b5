"""Every simulation of the reproduction as an independent task: a frozen, picklable description in, a
`Measurement` out, computed by the top-level function `run_task`.

Invariant: a task carries everything its simulation depends on (the trace file, the setting, the time
model, the rate, the seed, the cache, the sampling), so tasks can run in any order, in any process
(``map``, a process pool, Ray) and give the same measurement; the only state shared between tasks in
one process is the parsed trace, cached read-only per path.

Systems (the artifact's, sosp-ae-39/sosp-ae-astra), by the simulator's cache names:

* ``orca-max`` / ``orca-pow2`` / ``orca-oracle``: `OrcaCache` reserving ``min(prompt + estimate,
  2048)`` slots in 16-token blocks placed by a buddy allocator; FCFS admission that stops at the first
  request that does not fit; never preempts.
* ``paged`` (vLLM): `PagedCache` over the core `BlockManager`, 1 % watermark at admission, preempting
  the newest request by recompute when a block is needed and none is free.

All of them run under the artifact's scheduler: each step one token per running sequence, then waiting
prompts, whole and in arrival order, while the step's tokens stay within the setting's
``max_num_batched_tokens`` and at most ``max_num_seqs`` sequences run (the simulator's V1 order without
chunked prefill).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from statistics import fmean

from pagedkv.paper.reference import paper_shares
from pagedkv.paper.setting import PaperSetting
from pagedkv.paper.sharegpt import load_sharegpt, poisson_stream
from pagedkv.simulator import KVCache, OrcaCache, PagedCache, SimConfig, SimResult, simulate
from pagedkv.simulator.metrics import StepSeries
from pagedkv.simulator.roofline import RooflineStepTime
from pagedkv.simulator.workload import Request


@dataclass(frozen=True, slots=True)
class PaperTask:
    """One simulation: `cache` serving the ShareGPT stream of (`rate`, `duration`, `seed`), measured over
    `window`. `n` > 1 samples n sequences per request, `beam_width` > 1 runs beam search."""

    figure: str
    cache: str
    seed: int
    rate: float
    duration: float
    window: tuple[float, float]
    trace: str
    setting: PaperSetting
    time_model: RooflineStepTime
    n: int = 1
    beam_width: int = 1
    beam_prune_prob: float = 0.1

    @property
    def label(self) -> str:
        """What a progress line says about it (``fig15 seed 3: paged beam 4``)."""
        sharing = f" n={self.n}" if self.n > 1 else f" beam {self.beam_width}" if self.beam_width > 1 else ""
        size = f" block {self.setting.block_size}" if self.figure == "fig18b" else ""
        return f"{self.figure} seed {self.seed}: {self.cache}{sharing}{size}"


@dataclass(frozen=True, slots=True)
class Measurement:
    """What one simulation measured over its window (percentages of KV capacity unless stated).

    `shares`: the paper's four categories; `saving`: blocks saved by sharing, the artifact's
    ``1 - 1 / mean(logical / physical)`` over steps; `waste`: slots held but holding no token.
    """

    task: PaperTask
    shares: dict[str, float]
    held: float
    waste: float
    saving: float
    mean_batch: float
    mean_queue: float
    mean_step_ms: float
    steps: int
    preemptions: int
    finished: int


def run_task(task: PaperTask) -> Measurement:
    """Simulate `task` and measure it over its window (the function every runner maps over tasks)."""
    requests = poisson_stream(trace_pool(task.trace), task.rate, task.duration, task.seed)
    config = artifact_config(
        task.setting,
        task.time_model,
        task.seed,
        max_time=task.duration,
        beam_prune_prob=task.beam_prune_prob,
        n=task.n,
        beam_width=task.beam_width,
    )
    result = simulate(requests, system_cache(task.cache, task.setting), config, keep_series=True)
    assert result.series is not None  # kept: Fig. 15's measure averages a ratio step by step
    return _measure(task, result, result.series)


def artifact_config(
    setting: PaperSetting, time_model: RooflineStepTime, seed: int, **options: float | int | None
) -> SimConfig:
    """The artifact's scheduler for `setting` (a token per running sequence, then whole prompts within
    the step's token and sequence limits) on `time_model`; `options` are further `SimConfig` fields."""
    deployment = setting.deployment
    return SimConfig(
        step_time=time_model,
        seed=seed,
        max_num_seqs=deployment.num_seqs,
        max_num_batched_tokens=deployment.batched_tokens,
        scheduler="v1",
        enable_chunked_prefill=False,
        **options,  # type: ignore[arg-type]
    )


def system_cache(system: str, setting: PaperSetting) -> KVCache:
    """A fresh cache for one of the paper's systems, holding `setting.num_slots` token slots."""
    if system == "paged":
        return PagedCache(setting.num_slots, setting.block_size, watermark=setting.watermark, name=system)
    policy = system.removeprefix("orca-")
    return OrcaCache(
        setting.num_slots, setting.max_seq_len, policy, block_size=setting.block_size, name=system
    )


def _measure(task: PaperTask, result: SimResult, series: StepSeries) -> Measurement:
    summary = result.summary(task.window)
    start, end = task.window
    in_window = [i for i, t in enumerate(series.time) if start <= t < end]
    times = [series.time[i] for i in in_window]
    ratios = [
        (series.held[i] + series.saved[i]) / series.held[i] for i in in_window if series.held[i]
    ]  # logical blocks (what sequences would hold alone) / physical blocks, per step
    return Measurement(
        task=task,
        shares=paper_shares(summary),
        held=summary["held_pct_mean"],
        waste=summary["held_pct_mean"] - summary["token_states_pct_mean"],
        saving=100.0 * (1.0 - 1.0 / fmean(ratios)) if ratios else 0.0,
        mean_batch=summary["batch_mean"],
        mean_queue=summary["queue_mean"],
        mean_step_ms=1e3 * (times[-1] - times[0]) / max(len(times) - 1, 1),
        steps=summary["steps"],
        preemptions=summary["preemptions"],
        finished=summary["requests_finished"],
    )


@functools.lru_cache(maxsize=4)
def trace_pool(trace: str) -> list[Request]:
    """The trace's length pairs, parsed once per process (tasks only slice and copy them, never change
    them: `poisson_stream` shuffles a copy)."""
    return load_sharegpt(trace)
