"""`pagedkv sweep --plan`: every point a one-configuration plan; its row is what `run_plan` finds.

The workload is test_knee's hand-computable one (one-token prompts, ten-token outputs, a constant 0.1-s
step, plenty of KV), so a request holds one of ``--max-num-seqs`` places for exactly 1 s: the throughput
at saturation is max-num-seqs requests/s, and each plan runs in a fraction of a second.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

import pagedkv.sweep.plans
from pagedkv.cli import main
from pagedkv.plan.report import answer_metrics
from pagedkv.plan.run import Plan, build_plan, run_plan
from pagedkv.plan.slo import parse_slos
from pagedkv.plan.verdict import pooled_metrics
from pagedkv.sweep.grid import build_grid
from pagedkv.sweep.plans import PlanOptions

MD = ["--prompt-range", "1", "1", "--output-range", "10", "10", "--step-time", "0.1", "--kv-slots", "1024"]
STREAMS = ["--num-requests", "200", "--seeds", "0,1"]
SLOS = ("mean:e2e=1.5s", "mean:e2e=3s")
SWEEP = ["sweep", "--plan", *MD, *STREAMS, "--grid", "max-num-seqs=1,4", "--grid", f"slo={','.join(SLOS)}"]


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> list[Plan]:
    """Every plan searched in this process (``--jobs 1``)."""
    seen: list[Plan] = []

    def counting(plan: Plan) -> Any:
        seen.append(plan)
        return run_plan(plan)

    monkeypatch.setattr(pagedkv.sweep.plans, "run_plan", counting)
    return seen


def test_one_row_per_point_holding_what_run_plan_finds(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main([*SWEEP, "--out-dir", str(out), "--jobs", "2"]) == 0
    rows = read(out / "results.csv")
    assert [(r["max_num_seqs"], r["slo"], r["cache"]) for r in rows] == [
        (seqs, slo, "paged") for seqs in ("1", "4") for slo in SLOS
    ]
    inputs = PlanOptions().columns
    answer = ["status", "max_rate", "next_rate", "saturation_rate", "limited_by"]
    assert list(rows[0])[: len(inputs) + 8] == [*inputs, "point", "cache", "error", *answer]
    assert inputs[-3:] == ["slo", "seeds", "tolerance"]
    assert not {"rate", "seed", "max_time", "window"} & set(inputs)  # the planner's, or meaningless
    for row in rows:  # inputs as the plan ran them
        assert (row["num_requests"], row["seeds"], row["tolerance"], row["kv_slots"]) == (
            "200",
            "0 1",
            "0.02",
            "1024",
        )
        assert row["caches"] == "paged" and row["error"] == ""
    # differential: each row is the answer `run_plan` gives for the same options
    for row in rows:
        options = {"prompt_range": [1, 1], "output_range": [10, 10], "step_time": 0.1, "kv_slots": 1024}
        plan = build_plan(
            {**options, "max_num_seqs": int(row["max_num_seqs"])}, (), [row["slo"]], (0, 1), 200
        )
        (result,) = run_plan(plan)
        assert result.status.value == row["status"] == "found"
        assert (row["max_rate"], row["next_rate"]) == (str(result.max_rate), str(result.next_rate))
        assert row["saturation_rate"] == str(result.saturation_rate)
        at_max = pooled_metrics(result.points[0, result.max_rate])
        assert row["batch_mean"] == str(at_max["batch_mean"]) and row["e2e_s_p99"] == str(at_max["e2e_s_p99"])
        assert float(row["mean_e2e_s"]) <= float(row["slo"].removeprefix("mean:e2e=").removesuffix("s"))
    # the physics: capacity scales with max-num-seqs (1 and 4 requests/s at saturation), a looser SLO
    # sustains more, and the M/D/1 mean-latency knee of 1.5 s is at half the capacity (test_knee)
    rates = {(r["max_num_seqs"], r["slo"]): float(r["max_rate"]) for r in rows}
    assert [round(float(r["saturation_rate"])) for r in rows] == [1, 1, 4, 4]
    assert rates["1", SLOS[0]] < rates["1", SLOS[1]] < rates["4", SLOS[0]] < rates["4", SLOS[1]]
    assert rates["1", SLOS[0]] == pytest.approx(0.5, rel=0.05)
    assert rows[0]["limited_by"].startswith(f"at {float(rows[0]['next_rate']):.3g} req/s: mean e2e latency ")
    assert sorted(p.name for p in out.glob("*.png")) == [
        "max_rate-vs-max_num_seqs-by-slo.png", "saturation_rate-vs-max_num_seqs-by-slo.png",
    ]  # fmt: skip


def test_the_answer_columns_are_known_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["sweep", "--plan", *MD, *STREAMS, "--slo", "p99:ttft=2s", "--slo", "mean:e2e=3s", "--no-plot"]
    assert main([*argv, "--out-dir", str(out), "--jobs", "1"]) == 0
    (row,) = read(out / "results.csv")
    assert row["slo"] == "p99:ttft=2s mean:e2e=3s"
    numeric = [key for key, value in row.items() if key in answer_metrics(parse_slos(row["slo"].split()))]
    assert numeric == answer_metrics(parse_slos(row["slo"].split()))  # every one, in this order
    assert PlanOptions().metrics() == answer_metrics(())


def test_slo_values_render_as_repeated_flags() -> None:
    options = PlanOptions()
    grid = build_grid(options, None, ["slo=p99:ttft=2s;mean:e2e=3s,p99:ttft=1s"], {})
    assert grid.fixed == ()
    assert [point.argv for point in grid.points()] == [
        ("--slo", "p99:ttft=2s", "--slo", "mean:e2e=3s"),
        ("--slo", "p99:ttft=1s"),
    ]
    grid = build_grid(options, None, [], {"slo": ["p99:ttft=2s", "p99:tpot=100ms"], "seeds": "0-4"})
    assert grid.fixed == ("--slo", "p99:ttft=2s", "--slo", "p99:tpot=100ms", "--seeds", "0-4")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slo", "p99:ttft=2s"], "--slo: a planner option: add --plan"),
        (["--grid", "seeds=0,1"], "--grid seeds=0,1: a planner option: add --plan"),
        (["--plan", "--slo", "p99:ttft=2"], "point max_num_seqs=1: --slo p99:ttft=2: give a unit, s or ms"),
        (["--plan", "--grid", "slo=p99:ttft=1s,p99:ttft"], "slo=p99:ttft: --slo p99:ttft: expected "),
        (["--plan", "--grid", "rate=1,2"], "--grid rate=1,2: the planner searches the rate; remove it"),
        (["--plan", "--seed", "1"], "--seed: use --seeds (the planner pools several seeds at every rate)"),
        (["--plan", "--window", "1", "2"], "--window: the planner measures the middle 80 % of each stream"),
        (["--plan", "--caches", "paged,orca-max"], "--caches paged,orca-max: a plan point runs one cache; "),
        (["--plan", "--tolerance", "2"], "argument --tolerance: must be a number in (0, 1), got '2'"),
        (["--plan", "--num-requests", "5"], "--num-requests 5: a stream needs at least 10 requests"),
        (["--plan", "--seeds", "1,1"], "argument --seeds: expected distinct seeds >= 0"),
        (["--plan", "--plot", "tokens_per_s:max-num-seqs"], "--plot tokens_per_s:max-num-seqs: no metric"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_before_any_plan_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], plans: list[Plan], args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    argv = ["sweep", *MD, "--grid", "max-num-seqs=1,4", *args, "--out-dir", str(out), "--jobs", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pagedkv sweep: error: ") and message in err and err.count("\n") == 1, err
    assert plans == [] and not out.exists()


def test_resume_skips_finished_plans_and_ctrl_c_keeps_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], plans: list[Plan]
) -> None:
    args = [*SWEEP, "--no-plot", "--jobs", "1"]
    full, partial = tmp_path / "full", tmp_path / "partial"
    assert main([*args, "--out-dir", str(full)]) == 0
    assert len(plans) == 4
    lines = (full / "results.csv").read_text().splitlines(keepends=True)
    partial.mkdir()
    (partial / "results.csv").write_text("".join(lines[:1] + lines[2:4]))  # header + the 2nd and 3rd points
    plans.clear()
    assert main([*args, "--out-dir", str(partial), "--resume"]) == 0
    assert [(p.configurations[0].argv, p.slos[0].bound_s) for p in plans] == [
        (plans[0].configurations[0].argv, 1.5),
        (plans[1].configurations[0].argv, 3.0),
    ]
    assert [p.runs[0].config.max_num_seqs for p in plans] == [1, 4]  # the 1st and the 4th point
    assert (partial / "results.csv").read_text() == (full / "results.csv").read_text()

    def interrupted_second(plan: Plan) -> Any:
        if plans:
            raise KeyboardInterrupt
        plans.append(plan)
        return run_plan(plan)

    plans.clear()
    monkeypatch.setattr(pagedkv.sweep.plans, "run_plan", interrupted_second)
    stopped = tmp_path / "stopped"
    assert main([*args, "--out-dir", str(stopped)]) == 130
    assert capsys.readouterr().err.endswith(
        f"1 of 4 points are in {stopped}/results.csv; rerun with --resume to run the rest\ninterrupted\n"
    )
    assert (stopped / "results.csv").read_text() == "".join(lines[:2])
