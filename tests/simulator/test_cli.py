"""`pagedkv simulate` / `python simulate.py`: the plot, the JSON, the table, and every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pagedkv.cli import main

REPO = Path(__file__).resolve().parents[2]
SMALL = ["simulate", "--num-requests", "60", "--prompt-range", "20", "600", "--output-range", "5", "200"]


def test_writes_plot_json_and_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, metrics = tmp_path / "frag.png", tmp_path / "metrics.json"
    assert main([*SMALL, "--out", str(out), "--json", str(metrics)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    text = capsys.readouterr().out
    assert "25,600 KV token slots for every cache" in text  # 32 rows x (600 + 200)
    for label in ("token states", "internal fragmentation", "external fragmentation & other", "orca-pow2"):
        assert label in text
    document = json.loads(metrics.read_text())
    assert list(document["caches"]) == ["naive", "orca-max", "orca-pow2", "orca-oracle", "paged"]
    paged = document["caches"]["paged"]
    assert paged["capacity_slots"] == document["capacity_slots"] == 25_600
    assert len(paged["series"]["held"]) == paged["summary"]["steps"]
    assert paged["summary"]["requests_finished"] == 60
    assert len(paged["requests"]["latency_s"]) == 60


def test_trace_with_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fixture = Path(__file__).parent / "fixtures" / "mooncake.jsonl"
    args = ["simulate", "--trace", str(fixture), "--caches", "naive,paged", "--prefix-caching", "--no-plot"]
    assert main([*args, "--preemption", "swap", "--n", "2", "--max-seq-len", "1024", "--rows", "4"]) == 0
    text = capsys.readouterr().out
    assert "(mooncake, timestamps from the trace); 2 truncated to max_seq_len" in text
    assert "parallel sampling, n = 2" in text


BAD_INPUTS = [
    (["--rate", "0"], "rate=0.0"),
    (["--rate", "-3"], "rate=-3.0"),
    (["--max-seq-len", "0"], "--max-seq-len 0"),
    (["--kv-slots", "100"], "smaller than one naive row"),
    (["--caches", "paged", "--kv-slots", "500"], "the pool is smaller than one request"),
    (["--caches", "naive,bogus"], "unknown cache 'bogus'"),
    (["--n", "0"], "n=0"),
    (["--n", "2", "--beam-width", "2"], "not both"),
    (["--step-time", "0"], "base_s=0.0"),
    (["--json", "/nonexistent-dir/x.json"], "does not exist"),
    (["--trace", "/nonexistent-dir/trace.csv"], "cannot read the trace"),
    (["--window", "5000", "6000"], "contains no step"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_exits_2_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*SMALL, "--no-plot", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pagedkv simulate: error:") and message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", ":1: empty trace"),
        ("input_len,output_len\n", ":1: empty trace: the file has no request rows"),
        ("input_len,output_len\n10,5\n12,x\n", ":3:"),
        ("input_len,output_len\n10,-5\n", ":2:"),
    ],
)
def test_bad_trace_exits_2_naming_file_and_line(
    tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(content)
    assert main(["simulate", "--trace", str(trace), "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert f"{trace}{message}" in err and "Traceback" not in err


def test_simulate_py_is_the_same_command_and_never_shows_a_traceback(tmp_path: Path) -> None:
    bad = subprocess.run(
        [sys.executable, str(REPO / "simulate.py"), "--rate", "0"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert "rate=0.0" in bad.stderr and "Traceback" not in bad.stderr
    usage = subprocess.run(
        [sys.executable, str(REPO / "simulate.py"), "--block-size", "many"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert usage.returncode == 2 and "invalid int value" in usage.stderr and "Traceback" not in usage.stderr
    good = subprocess.run(
        [sys.executable, str(REPO / "simulate.py"), *SMALL[1:], "--caches", "naive,paged", "--no-plot"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert good.returncode == 0, good.stderr
    assert "tokens / slots held" in good.stdout and good.stderr == ""  # no progress bar off a terminal


def test_simulating_imports_neither_torch_nor_matplotlib() -> None:
    code = (
        "import sys\n"
        "from pagedkv.cli import main\n"
        "assert main(['simulate', '--num-requests', '20', '--no-plot', '--prompt-range', '5', '50']) == 0\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'matplotlib', 'numpy'}))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]"


def test_run_point_gives_one_flat_row_per_cache_with_inputs_and_metrics() -> None:
    from pagedkv.simulator.cli import run_point

    rows = run_point(["--num-requests", "40", "--caches", "naive,paged", "--rate", "3", "--seed", "2"])
    assert [row["cache"] for row in rows] == ["naive", "paged"]
    for row in rows:
        assert row["rate"] == 3.0 and row["seed"] == 2 and row["num_requests"] == 40
        assert row["prompt_range"] == "200 4000"
        assert row["requests_finished"] == 40
        assert all(not isinstance(value, (list, tuple, dict)) for value in row.values())
    assert rows[1]["batch_mean"] > rows[0]["batch_mean"]  # paged runs a larger batch in equal memory


def test_run_point_raises_usage_errors_instead_of_exiting() -> None:
    from pagedkv.errors import UsageError
    from pagedkv.simulator.cli import run_point

    with pytest.raises(UsageError, match="--bogus"):
        run_point(["--bogus"])
