"""`pagedkv plan` end to end: every mistake caught before any simulation (one line naming the flag, exit 2),
unsustainable cases as clear results, the outputs, and Ctrl-C."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

import pagedkv.plan.run
from pagedkv.cli import main
from pagedkv.plan.measure import PointResult
from pagedkv.plan.point import PointTask, run_point

MD = ["--prompt-range", "1", "1", "--output-range", "10", "10", "--step-time", "0.1", "--kv-slots", "1024"]
SMALL = [*MD, "--max-num-seqs", "2", "--num-requests", "300", "--jobs", "1"]


@pytest.fixture
def simulated(monkeypatch: pytest.MonkeyPatch) -> list[PointTask]:
    """Every point the plan simulates in this process (``--jobs 1``)."""
    seen: list[PointTask] = []

    def counting(task: PointTask) -> PointResult:
        seen.append(task)
        return run_point(task)

    monkeypatch.setattr(pagedkv.plan.run, "run_point", counting)
    return seen


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--slo", "p99:ttft=2"], "--slo p99:ttft=2: give a unit, s or ms (e.g. 2s)"),
        (["--slo", "p99:speed=2s"], "--slo p99:speed=2s: unknown latency 'speed'"),
        (["--rate", "3"], "--rate: the planner searches the rate; remove it"),
        (["--seed", "3"], "--seed: use --seeds (the planner pools several seeds at every rate)"),
        (["--max-time", "10"], "--max-time: the planner runs every request to its end; remove it"),
        (["--compare", "rate=1,2"], "--compare rate=1,2: the planner searches the rate; remove it"),
        (["--compare", "num-requests=10,20"], "--compare num-requests=10,20: use --num-requests once"),
        (["--compare", "block-size=8,8"], "--compare block-size=8,8: a value is listed twice"),
        (["--compare", "block-size"], "--compare block-size: expected NAME=V1,V2,..."),
        (["--compare", "blok-size=8,16"], "--compare blok-size=8,16: 'blok-size' is not a `pagedkv"),
        (["--compare", "block-size=8", "--compare", "block-size=16"], "--compare block_size: compared twice"),
        (["--compare", "block-size=8,16", "--block-size", "32"], "--block-size: also compared with"),
        (["--compare", "block-size=8,0"], "configuration block_size=0: argument --block-size: must be"),
        (["--caches", "orca-max,paged"], "use --compare caches=orca-max,paged"),
        (["--compare", "caches=paged,nope"], "configuration caches=nope: --caches: unknown cache 'nope'"),
        (["--compare", "block-size=16,16.0"], None),  # argparse refuses 16.0 for an int option
        (["--prompt-range", "2000", "3000"], "the pool is smaller than one request"),  # 1,024 slots
        (["--slo", "p99:tpot=50ms"], "p99 TPOT <= 50 ms: below one engine step (100 ms"),
        (["--out", "/no/such/folder/plan.png"], "--out /no/such/folder/plan.png: the folder /no/such/folder"),
        (["--out", "plan.txt"], "--out plan.txt: unsupported file type '.txt'"),
        (["--json", "/no/such/folder/plan.json"], "--json /no/such/folder/plan.json: the folder"),
        (["--csv", "/no/such/folder/plan.csv"], "--csv /no/such/folder/plan.csv: the folder"),
        (["--seeds", "1,x"], "argument --seeds: expected seeds such as 0-9 or 0,1,2, got '1,x'"),
        (["--seeds", "1,1"], "argument --seeds: expected distinct seeds"),
        (["--tolerance", "1.5"], "argument --tolerance: must be a number in (0, 1), got '1.5'"),
        (["--num-requests", "5"], "--num-requests 5: a stream needs at least 10 requests"),
    ],
)
def test_every_mistake_stops_before_any_simulation(
    argv: list[str],
    message: str | None,
    simulated: list[PointTask],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        code = main(["plan", *SMALL, *argv])
        raise SystemExit(code)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pagedkv plan: error: "), err
    if message is not None:
        assert message in err, err
    assert simulated == []
    assert list(tmp_path.iterdir()) == []


def test_a_missing_trace_stops_before_any_simulation(
    simulated: list[PointTask], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--trace", "/no/such/trace.csv", "--jobs", "1", "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/no/such/trace.csv" in err
    assert simulated == []


def test_unsustainable_at_any_load_is_a_result_not_a_hang(
    simulated: list[PointTask], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.json"
    # every request takes ten 0.1-s steps: a median end-to-end latency of 0.5 s is met at no rate
    assert main(["plan", *SMALL, "--slo", "p50:e2e=500ms", "--no-plot", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no rate sustains: even at " in printed and "p50 e2e latency 1 s > 500 ms" in printed
    (configuration,) = json.loads(out.read_text())["configurations"]
    assert configuration["status"] == "none" and configuration["max_rate"] is None
    # the saturated run, then halving from half its throughput down to 1/64 of it: 6 rates x 3 seeds
    assert len(simulated) == 3 + 6 * 3
    assert min(task.rate for task in simulated) == pytest.approx(configuration["saturation_rate"] / 64)


def test_a_configuration_below_one_step_is_reported_and_the_others_searched(
    simulated: list[PointTask], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.json"
    base = [a for a in SMALL if a not in ("--step-time", "0.1")]
    argv = ["--compare", "step-time=0.05,0.2", "--slo", "p99:tpot=100ms", "--no-plot", "--json", str(out)]
    assert main(["plan", *base, *argv]) == 0
    fast, slow = json.loads(out.read_text())["configurations"]
    assert fast["status"] == "found" and slow["status"] == "none"
    why = "p99 TPOT <= 100 ms: below one engine step (200 ms, one sequence and nothing else)"
    assert slow["why_none"] == why
    assert {task.key for task in simulated} == {0}  # the impossible configuration is never simulated
    assert "step_time=0.2" in capsys.readouterr().out


def test_outputs_table_json_csv_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = {name: tmp_path / f"plan.{name}" for name in ("png", "json", "csv")}
    argv = ["--compare", "max-num-seqs=1,2", "--slo", "p90:e2e=2s", "--slo", "p99:ttft=3s"]
    files = ["--out", str(paths["png"]), "--json", str(paths["json"]), "--csv", str(paths["csv"])]
    assert main(["plan", *MD, "--num-requests", "300", "--jobs", "2", *argv, *files]) == 0
    printed = capsys.readouterr().out
    document: dict[str, Any] = json.loads(paths["json"].read_text())
    labels = [c["label"] for c in document["configurations"]]
    assert labels == ["max_num_seqs=1", "max_num_seqs=2"]
    rates = [c["max_rate"] for c in document["configurations"]]
    assert rates[0] < rates[1]  # a second server sustains more
    for label, rate in zip(labels, rates, strict=True):
        assert any(line.startswith(label) and f"{rate:.3g}" in line for line in printed.splitlines())
    with paths["csv"].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == sum(len(c["points"]) for c in document["configurations"])
    assert [r["max_num_seqs"] for r in rows if r["max_rate"] == "True"] == ["1", "2"]
    columns = {"rate", "sustains", "p90_e2e_s", "p90_e2e_s_min", "p99_ttft_s", "ttft_s_p99", "batch_mean"}
    assert columns <= set(rows[0])
    assert document["slos"] == [
        {"name": "p90_e2e_s", "statistic": "p90", "metric": "e2e", "bound_s": 2.0},
        {"name": "p99_ttft_s", "statistic": "p99", "metric": "ttft", "bound_s": 3.0},
    ]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.csv", "plan.json", "plan.png"]


def test_ctrl_c_writes_nothing_and_exits_130(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = []

    def interrupted(task: PointTask) -> PointResult:
        calls.append(task)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return run_point(task)

    monkeypatch.setattr(pagedkv.plan.run, "run_point", interrupted)
    out = tmp_path / "plan.json"
    assert main(["plan", *SMALL, "--json", str(out), "--out", str(tmp_path / "plan.png")]) == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert list(tmp_path.iterdir()) == []
