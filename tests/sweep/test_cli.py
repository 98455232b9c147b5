"""`pagedkv sweep` end to end: the table, failing points, resume, Ctrl-C, and every check before work."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import pagedkv.sweep.grid
from pagedkv.cli import main
from pagedkv.simulator.cli import run_point
from pagedkv.sweep.options import SimulateOptions, cell

FIXTURES = Path(__file__).resolve().parents[1] / "simulator" / "fixtures"
SMALL = ["--num-requests", "30", "--prompt-range", "10", "200", "--output-range", "5", "100"]
SWEEP = ["sweep", *SMALL, "--caches", "orca-max,paged", "--grid", "rate=1,4", "--grid", "block-size=8,32"]


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(None not in row and None not in row.values() for row in rows), "a row with missing fields"
    return rows


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every point simulated in this process (``--jobs 1``), by its argv."""
    seen: list[list[str]] = []

    def counting(argv: list[str]) -> list[dict[str, Any]]:
        seen.append(argv)
        return run_point(argv)

    monkeypatch.setattr(pagedkv.sweep.grid, "run_point", counting)
    return seen


def test_one_row_per_point_and_cache_with_every_input_and_metric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main([*SWEEP, "--out-dir", str(out), "--jobs", "2"]) == 0
    rows = read(out / "results.csv")
    assert [(r["rate"], r["block_size"], r["cache"]) for r in rows] == [
        (rate, bs, cache) for rate in ("1.0", "4.0") for bs in ("8", "32") for cache in ("orca-max", "paged")
    ]
    inputs = SimulateOptions().columns
    assert list(rows[0])[: len(inputs) + 3] == [*inputs, "point", "cache", "error"]
    # differential: each row holds exactly what `pagedkv simulate` reports for that point
    expected = run_point([*SMALL, "--caches", "orca-max,paged", "--rate", "4", "--block-size", "8"])
    for got, want in zip(rows[4:6], expected, strict=True):
        for key in ("steps", "e2e_s_mean", "batch_peak", "held_pct_mean", "requests_finished"):
            assert got[key] == str(want[key]), key
        reported = [column for column in inputs if column in want]
        assert {c: got[c] for c in reported} == {c: cell(want[c]) for c in reported}  # inputs as run
        assert got["max_model_len"] == "300" and got["kv_slots"] == "9600"  # resolved: 200 + 100, x 32 rows
    assert rows[5]["preemptions_recompute"] == str(expected[1]["preemptions_recompute"])
    assert rows[4]["preemptions_recompute"] == ""  # orca has no such counter
    text = capsys.readouterr().out
    assert "sweep:   4 points (rate x block_size = 2 x 2), caches orca-max,paged" in text
    assert "backend: local, 2 processes" in text


def test_parquet_holds_the_same_table(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="the parquet extra (make test installs it)")
    out = tmp_path / "out"
    assert main([*SWEEP, "--out-dir", str(out), "--jobs", "1", "--no-plot"]) == 0
    rows = read(out / "results.csv")
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert len(table) == len(rows) == 8
    assert list(table[0]) == list(rows[0])
    assert [(t["rate"], t["block_size"], t["cache"], t["steps"]) for t in table] == [
        (float(r["rate"]), int(r["block_size"]), r["cache"], int(r["steps"])) for r in rows
    ]


def test_without_pyarrow_the_csv_is_written_and_a_note_says_how_to_get_parquet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pagedkv.sweep.table.parquet_available", lambda: False)
    out = tmp_path / "out"
    assert main([*SWEEP, "--out-dir", str(out), "--jobs", "1", "--no-plot"]) == 0
    assert "note: results.parquet needs pyarrow (pip install 'pagedkv[parquet]')" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["results.csv"]


def test_plots_are_drawn_for_the_named_metric_and_axes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [*SWEEP, "--out-dir", str(out), "--jobs", "1", "--plot", "e2e_s_mean:rate:block-size"]
    assert main([*args, "--plot", "steps:block_size"]) == 0
    for name in ("e2e_s_mean-vs-rate-by-block_size.png", "steps-vs-block_size.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*"))  # no temporary file left behind


def test_default_plots_without_a_plot_option(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main([*SWEEP, "--out-dir", str(out), "--jobs", "1"]) == 0
    metrics = ("tokens_per_s", "e2e_s_mean", "batch_mean", "token_util_of_held")
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        f"{m}-vs-rate-by-block_size.png" for m in metrics
    )


def test_a_failing_point_is_a_row_with_its_inputs_and_the_others_finish(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = FIXTURES / "lengths_input_output.csv", tmp_path / "missing.csv"
    out = tmp_path / "out"
    args = ["sweep", "--rate", "2", "--caches", "paged", "--grid", f"trace={good},{bad}"]
    assert main([*args, "--grid", "seed=0,1", "--out-dir", str(out), "--jobs", "2"]) == 1
    rows = read(out / "results.csv")
    assert [(r["trace"], r["seed"], r["cache"], r["error"] != "") for r in rows] == [
        (str(good), "0", "paged", False),
        (str(good), "1", "paged", False),
        (str(bad), "0", "", True),
        (str(bad), "1", "", True),
    ]
    assert rows[2]["error"] == f"{bad}: cannot read the trace: No such file or directory"
    assert rows[2]["rate"] == "2.0" and rows[2]["steps"] == ""
    assert rows[0]["requests_finished"] == "3"
    err = capsys.readouterr().err
    assert "2 of 4 points failed" in err
    assert f"  {bad}: cannot read the trace: No such file or directory\n    trace={bad} seed=0\n" in err


def test_resume_runs_only_the_points_not_in_the_file(tmp_path: Path, calls: list[list[str]]) -> None:
    full, partial = tmp_path / "full", tmp_path / "partial"
    assert main([*SWEEP, "--out-dir", str(full), "--jobs", "1", "--no-plot"]) == 0
    assert len(calls) == 4
    lines = (full / "results.csv").read_text().splitlines(keepends=True)
    partial.mkdir()
    (partial / "results.csv").write_text("".join(lines[:1] + lines[3:5]))  # header + the 2nd point
    calls.clear()
    assert main([*SWEEP, "--out-dir", str(partial), "--jobs", "1", "--no-plot", "--resume"]) == 0
    assert [c[-4:] for c in calls] == [
        ["--rate", "1", "--block-size", "8"],
        ["--rate", "4", "--block-size", "8"],
        ["--rate", "4", "--block-size", "32"],
    ]
    assert (partial / "results.csv").read_text() == (full / "results.csv").read_text()
    calls.clear()
    assert main([*SWEEP, "--out-dir", str(partial), "--jobs", "1", "--no-plot", "--resume"]) == 0
    assert calls == []


def test_an_existing_table_needs_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("keep me\n")
    assert main([*SWEEP, "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pagedkv sweep: error: --out-dir {out}: {out}/results.csv exists; pass --resume")
    assert (out / "results.csv").read_text() == "keep me\n"


def test_ctrl_c_in_a_point_leaves_a_valid_table_and_resume_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    done: list[int] = []

    def interrupted_third(argv: list[str]) -> list[dict[str, Any]]:
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(1)
        return run_point(argv)

    monkeypatch.setattr(pagedkv.sweep.grid, "run_point", interrupted_third)
    out = tmp_path / "out"
    assert main([*SWEEP, "--out-dir", str(out), "--jobs", "1", "--no-plot"]) == 130
    err = capsys.readouterr().err
    assert err.endswith(
        f"2 of 4 points are in {out}/results.csv; rerun with --resume to run the rest\ninterrupted\n"
    )
    rows = read(out / "results.csv")
    assert [(r["rate"], r["block_size"], r["cache"]) for r in rows] == [
        ("1.0", "8", "orca-max"), ("1.0", "8", "paged"), ("1.0", "32", "orca-max"), ("1.0", "32", "paged"),
    ]  # fmt: skip
    assert not (out / "results.parquet").exists()
    monkeypatch.setattr(pagedkv.sweep.grid, "run_point", run_point)
    assert main([*SWEEP, "--out-dir", str(out), "--jobs", "1", "--no-plot", "--resume"]) == 0
    reference = tmp_path / "reference"
    assert main([*SWEEP, "--out-dir", str(reference), "--jobs", "2", "--no-plot"]) == 0
    assert (out / "results.csv").read_text() == (reference / "results.csv").read_text()


def test_sigint_stops_the_pool_and_leaves_a_valid_table(tmp_path: Path) -> None:
    """A real Ctrl-C (SIGINT to the process group, as a terminal sends it) during a 2-process sweep."""
    out = tmp_path / "out"
    script = Path(sys.executable).with_name("pagedkv")
    args = [str(script), "sweep", "--num-requests", "400", "--caches", "paged", "--no-plot", "--jobs", "2"]
    process = subprocess.Popen(
        [*args, "--grid", "seed=" + ",".join(map(str, range(40))), "--out-dir", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,  # a shell's background job would start with Ctrl-C ignored
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_lines(out / "results.csv")) < 2:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert err.endswith("rerun with --resume to run the rest\ninterrupted\n"), err
    assert "Traceback" not in err
    rows = read(out / "results.csv")
    assert 1 <= len(rows) < 40
    assert [r["seed"] for r in rows] == sorted({r["seed"] for r in rows}, key=[r["seed"] for r in rows].index)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plot", "no_such:rate"], "--plot no_such:rate: no metric 'no_such'; the metrics are "),
        (["--plot", "steps:seed"], "--plot steps:seed: seed is not an axis of this sweep; use one of rate, "),
        (["--plot", "steps"], "--plot steps: expected METRIC:X or METRIC:X:LINES"),
        (["--grid", "seed=0,x"], "point rate=1 block_size=8 seed=x: argument --seed: must be an integer"),
        (["--config", "missing.toml"], r"--config missing.toml: no such file"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_before_any_point_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], calls: list[list[str]], args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    assert main([*SWEEP, *args, "--out-dir", str(out), "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pagedkv sweep: error: ") and message in err and err.count("\n") == 1, err
    assert calls == [] and not out.exists()


def test_output_folder_is_checked_before_any_point_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], calls: list[list[str]]
) -> None:
    missing_parent = tmp_path / "no" / "such" / "out"
    assert main([*SWEEP, "--out-dir", str(missing_parent), "--jobs", "1"]) == 2
    assert (
        f"--out-dir {missing_parent}: the folder {missing_parent.parent} does not exist"
        in capsys.readouterr().err
    )
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert main([*SWEEP, "--out-dir", str(a_file), "--jobs", "1"]) == 2
    assert f"--out-dir {a_file}: is a file, not a folder" in capsys.readouterr().err
    assert calls == []
