"""How many threads torch uses for the engine's matmuls, by default one per core not busy elsewhere.

Why not torch's default (one per core): decode steps are many small matmuls, and when another
process keeps a core busy, a second intra-op thread spends its time waiting for that core at every
barrier; on a loaded 2-core machine two threads ran small decode matmuls many times slower than one
(see docs/engine.md, benchmarks/bench_engine.py). Free cores are read from the 1-minute load
average, once, when the engine starts. The Numba decode kernel follows torch's setting.

Override: `LLM(..., num_threads=N)`, `pagedkv generate --threads N`, or call
`torch.set_num_threads(N)` yourself when you build an `Engine` directly.
"""

from __future__ import annotations

import os

from pagedkv.errors import InvalidArgument


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_num_threads() -> int:
    """Cores this process may use minus the cores other work keeps busy (load average), at least 1."""
    cores = available_cores()
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores, round(cores - busy)))


def set_num_threads(num_threads: int | None) -> int:
    """Set torch's intra-op threads (None: `default_num_threads()`); returns the number set."""
    import torch

    if num_threads is None:
        num_threads = default_num_threads()
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise InvalidArgument(f"num_threads must be a positive int, got {num_threads!r}")
    torch.set_num_threads(num_threads)
    return num_threads
