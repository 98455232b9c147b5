"""Simulator: the same request list served by naive contiguous caches and by the paged cache.

`workload` builds request lists (synthetic Poisson traffic), `traces` loads real traces into them;
`loop` serves a list with one cache (`simulate`) or several of equal memory (`compare`) and records
per-step memory metrics (`metrics`); `plot` draws them and `cli` is ``pagedkv simulate``.
The simulator needs only the standard library (matplotlib for the plot, imported when plotting).
"""

from pagedkv.simulator.cache import Admission, KVCache, Preemption, Usage
from pagedkv.simulator.config import SimConfig, SimulationConfigError, StepTime
from pagedkv.simulator.loop import CACHE_KINDS, StepView, compare, simulate, standard_caches
from pagedkv.simulator.metrics import BREAKDOWN, SimResult, StepSeries, StepTotals, summarize
from pagedkv.simulator.naive import NaiveCache
from pagedkv.simulator.orca import OrcaCache
from pagedkv.simulator.paged import PagedCache
from pagedkv.simulator.traces import TraceError, TraceResult, load_trace
from pagedkv.simulator.workload import Request, synthetic_workload, with_poisson_arrivals

__all__ = [
    "BREAKDOWN",
    "CACHE_KINDS",
    "Admission",
    "KVCache",
    "NaiveCache",
    "OrcaCache",
    "PagedCache",
    "Preemption",
    "Request",
    "SimConfig",
    "SimResult",
    "SimulationConfigError",
    "StepSeries",
    "StepTime",
    "StepTotals",
    "StepView",
    "TraceError",
    "TraceResult",
    "Usage",
    "compare",
    "load_trace",
    "simulate",
    "standard_caches",
    "summarize",
    "synthetic_workload",
    "with_poisson_arrivals",
]
