"""The Ray backend on a local Ray started here (``ray.init(num_cpus=2)``): the same results as the
local backend, failures included, for the runner and for a whole sweep."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pagedkv.cli import main
from pagedkv.runner import Failure, Local, Ray, run_tasks

# Ray on Linux binds a local cluster to the machine's network address; this Ray setting (meant for
# macOS/Windows, read when ray is imported) keeps the test's cluster on 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="the ray extra (pip install 'pagedkv[ray]'; make test installs it)")

FIXTURES = Path(__file__).resolve().parents[1] / "simulator" / "fixtures"


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_runner_gives_the_local_results_failures_included(local_ray: None) -> None:
    tasks = [5, -1, 0, 12]
    on_ray = dict(run_tasks(math.factorial, tasks, Ray()))
    assert on_ray == dict(run_tasks(math.factorial, tasks, Local(2)))
    assert on_ray[-1] == Failure("ValueError: factorial() not defined for negative values")
    assert ray.is_initialized()  # a Ray the caller started is left running


def test_sweep_on_ray_writes_the_same_table_as_the_local_pool(local_ray: None, tmp_path: Path) -> None:
    good, bad = FIXTURES / "lengths_input_output.csv", tmp_path / "missing.csv"
    args = ["sweep", "--caches", "orca-max,paged", "--grid", "rate=1,4", "--grid", "seed=0,1,2"]
    args += ["--grid", f"trace={good},{bad}", "--grid", "block-size=8,32", "--plot", "steps:rate:block-size"]
    assert main([*args, "--out-dir", str(tmp_path / "local"), "--jobs", "2"]) == 1  # the bad trace's points
    assert main([*args, "--out-dir", str(tmp_path / "ray"), "--ray"]) == 1
    local = (tmp_path / "local" / "results.csv").read_text()
    assert (tmp_path / "ray" / "results.csv").read_text() == local
    assert local.count("\n") == 1 + 12 * 2 + 12  # header, 12 good points x 2 caches, 12 failed points
    for name in ("results.parquet", "steps-vs-rate-by-block_size.png"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
