"""The planner finds knees computable by hand, latency rises with rate, and equal seeds give equal results.

The hand-computable cases: one-token prompts, ten-token outputs, a constant 0.1-s step, plenty of KV
memory, so every request occupies one of ``--max-num-seqs`` places for exactly ten steps, 1.0 s, and
the deployment is an M/D/c queue (Poisson arrivals, deterministic 1-s service, c servers):

* c = 1, SLO ``mean:e2e=1.5s``: Pollaczek-Khinchine gives a mean wait of rho / (2 (1 - rho)) seconds at
  load rho = rate x 1 s, so the mean end-to-end latency 1 + rho / (2 (1 - rho)) reaches 1.5 s at
  rho = 0.5: the knee is 0.5 req/s;
* c = 10, no SLO: the service rate is 10 req/s; above it the queue grows by 1 - 10 / rate of the
  arrivals, which the 2 % keep-up criterion flags from 10 / 0.98 = 10.2 req/s: the knee is 10 req/s
  less what the queue's noise costs at the critical load, plus the 2 %.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from statistics import fmean
from typing import Any

import pytest

from pagedkv.cli import main
from pagedkv.plan.point import PointTask, run_point

MD = ["--prompt-range", "1", "1", "--output-range", "10", "10", "--step-time", "0.1", "--kv-slots", "1024"]
MD1 = (*MD, "--max-num-seqs", "1", "--caches", "paged")


def plan(tmp_path: Path, *argv: str) -> dict[str, Any]:
    out = tmp_path / "plan.json"
    assert main(["plan", *argv, "--no-plot", "--json", str(out)]) == 0
    document: dict[str, Any] = json.loads(out.read_text())
    return document


def test_md1_mean_latency_knee_is_half_a_request_per_second(tmp_path: Path) -> None:
    found = plan(tmp_path, *MD, "--max-num-seqs", "1", "--slo", "mean:e2e=1.5s", "--jobs", "1")
    (configuration,) = found["configurations"]
    assert configuration["status"] == "found"
    assert configuration["saturation_rate"] == pytest.approx(1.0, rel=1e-6)  # one request a second
    assert configuration["max_rate"] == pytest.approx(0.5, rel=0.03)
    assert configuration["next_rate"] / configuration["max_rate"] <= 1.02
    (limit,) = configuration["limited_by"]
    assert limit.startswith("mean e2e latency ") and limit.endswith(" > 1.5 s")
    for point in configuration["points"]:  # Pollaczek-Khinchine at every rate tried, within the noise
        rho = point["rate"] * 1.0
        if rho < 0.9:
            assert point["slos"]["mean_e2e_s"]["value"] == pytest.approx(1 + rho / (2 * (1 - rho)), rel=0.05)


def test_md10_capacity_knee_is_ten_requests_per_second(tmp_path: Path) -> None:
    found = plan(tmp_path, *MD, "--max-num-seqs", "10", "--jobs", "1")
    (configuration,) = found["configurations"]
    assert configuration["saturation_rate"] == pytest.approx(10.0, rel=0.01)
    assert 9.5 <= configuration["max_rate"] <= 10.2 * 1.02
    assert configuration["limited_by"][0].startswith("queue grew by ")
    above = [p for p in configuration["points"] if p["rate"] >= 11]
    for point in above:  # the unserved share of the load: 1 - 10 / rate
        assert point["queue_growth_share"] == pytest.approx(1 - 10 / point["rate"], abs=0.02)


def test_md1_latency_rises_with_rate_for_every_seed() -> None:
    # common random numbers: the same requests, arrival times scaled by 1 / rate; with one server the
    # waits follow Lindley's recursion, so every request's wait can only grow with the rate -- even
    # between rates 1 % apart, where independent streams would differ by more than the rise
    for seed in (0, 1):
        means = [
            fmean(run_point(PointTask(0, MD1, rate, seed, 600, True)).latencies["e2e"])
            for rate in (0.1, 0.3, 0.5, 0.505, 0.51, 0.7, 0.9)
        ]
        assert means == sorted(means) and len(set(means)) == len(means), means


def test_paged_latency_rises_with_rate_within_noise() -> None:
    argv = (
        "--prompt-range", "100", "2000", "--output-range", "20", "400", "--kv-slots", "60000",
        "--max-num-batched-tokens", "2048", "--step-time", "0.02", "--step-time-per-prefill-token", "0.00001",
        "--step-time-per-context-token", "0.0000002", "--caches", "paged",
    )  # fmt: skip
    rates = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    for seed in (0, 1):
        points = [run_point(PointTask(0, argv, rate, seed, 800, True)) for rate in rates]
        for name in ("ttft", "e2e", "normalized"):
            p90 = [sorted(p.latencies[name])[int(0.9 * len(p.latencies[name]))] for p in points]
            assert all(later >= 0.95 * earlier for earlier, later in itertools.pairwise(p90)), (name, p90)
            assert p90[-1] > 1.2 * p90[0], (name, p90)
        assert [p.batch_mean for p in points] == sorted(p.batch_mean for p in points)


def test_equal_seeds_give_equal_points_and_equal_plans(tmp_path: Path) -> None:
    task = PointTask(7, MD1, 0.4, 3, 300, True)
    assert run_point(task) == run_point(task)
    assert run_point(task) != run_point(PointTask(7, MD1, 0.4, 4, 300, True))
    argv = [*MD, "--max-num-seqs", "2", "--slo", "p90:e2e=2s", "--num-requests", "400"]
    documents = []
    for jobs in ("1", "2"):
        (tmp_path / jobs).mkdir()
        document = plan(tmp_path / jobs, *argv, "--jobs", jobs)
        assert document.pop("backend") == f"local, {jobs} process{'es' if jobs == '2' else ''}"
        document.pop("wall_seconds")
        documents.append(document)
    assert documents[0] == documents[1]
    assert documents[0]["configurations"][0]["status"] == "found"
