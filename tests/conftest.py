"""What every test folder shares: the one way to find a real trace (the package's own lookup)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pagedkv.simulator.traces import find_trace


@pytest.fixture(scope="session")
def real_trace() -> Callable[[str], Path]:
    """``real_trace(name)``: the shared trace file `name`, or skip the test saying where it was looked for."""

    def find(name: str) -> Path:
        path = find_trace(name)
        if path is None:
            pytest.skip(f"real trace {name} not found in $PAGEDKV_TRACES or ../shared/data/traces")
        return path

    return find
