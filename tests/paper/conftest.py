"""The paper tests' one way to find the ShareGPT trace: the package's own lookup, skipping when absent."""

from __future__ import annotations

import pytest

from pagedkv.paper.sharegpt import TRACE_NAME, default_trace_path
from pagedkv.simulator.traces import TraceError


@pytest.fixture(scope="session")
def trace() -> str:
    try:
        return str(default_trace_path())
    except TraceError:
        pytest.skip(f"{TRACE_NAME} not found in $PAGEDKV_TRACES or <repo>/../shared/data/traces")
