"""docs/sweep.md's snippets run as written: its bash blocks in order in one folder (the first sweep,
the TOML file, the plot, --resume), then its Python blocks (reading the table, the runner)."""

from __future__ import annotations

import ast
import csv
import os
import re
import subprocess
import sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "sweep.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)


@pytest.mark.slow
def test_the_bash_and_python_snippets_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bash = blocks("bash")
    assert len(bash) == 5
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    stdout = []
    for block in bash:
        done = subprocess.run(
            ["bash", "-e", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        stdout.append(done.stdout)
    assert "resume:  18 points already in sweep-results/results.csv; 0 to run" in stdout[3]
    with (tmp_path / "sweep-plans" / "results.csv").open(newline="") as handle:
        plans = [
            (r["max_num_seqs"], r["slo"], r["status"], f"{float(r['max_rate']):.3g}")
            for r in csv.DictReader(handle)
        ]
    table = re.findall(
        r"^\| (\d) \| (\S+) \| ([\d.]+) \|", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE
    )
    assert plans == [(seqs, slo, "found", rate) for seqs, slo, rate in table] and len(plans) == 6
    with (tmp_path / "sweep-results" / "results.csv").open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 36
    assert (tmp_path / "sweep-toml" / "e2e_s_mean-vs-rate-by-block_size.png").exists()
    assert (tmp_path / "sweep-caches" / "batch_mean-vs-rate-by-cache.png").exists()

    python = blocks("python")
    assert len(python) == 2
    monkeypatch.chdir(tmp_path)
    out = StringIO()
    with redirect_stdout(out):
        for block in python:
            exec(compile(block, str(DOC), "exec"), {})
    table, *runner = out.getvalue().splitlines()
    assert table.startswith("[('2.0', '0', '") and len(ast.literal_eval(table)) == 6
    assert sorted(runner) == [
        "-1 failed: Failure(error='ValueError: factorial() not defined for negative values')",
        "10 -> 3628800",
        "5 -> 120",
    ]
