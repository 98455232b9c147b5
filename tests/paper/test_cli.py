"""`pagedkv paper`: the table, the JSON with the issue's keys, the PNGs, and clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pagedkv.cli import main
from pagedkv.paper.sharegpt import TRACE_NAME

REPO = Path(__file__).resolve().parents[2]
SHORT = ["--seeds", "0", "--duration", "200", "--window", "50", "200"]


@pytest.fixture(scope="module")
def trace() -> str:
    for directory in (REPO.parent / "shared" / "data" / "traces", os.environ.get("PAGEDKV_TRACES")):
        if directory and (Path(directory) / TRACE_NAME).is_file():
            return str(Path(directory) / TRACE_NAME)
    pytest.skip(f"{TRACE_NAME} not found in <repo>/../shared/data/traces or $PAGEDKV_TRACES")


def test_paper_prints_the_table_and_writes_json_and_figures(
    trace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "figs"
    argv = ["paper", "--trace", trace, "--figures", "fig2,fig13a", "--json", str(tmp_path / "paper.json")]
    assert main([*argv, *SHORT, "--out-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Figure 2: KV cache usage" in text and "Figure 13a" in text and "Figure 15" not in text
    assert "iteration = host 10.0 ms" in text  # the time model is stated with the numbers
    data = json.loads((tmp_path / "paper.json").read_text())
    assert set(data["fig2"]) == {"orca_max", "orca_pow2", "orca_oracle", "vllm"}
    assert set(data["fig2"]["orca_pow2"]) == {"token_states", "reservation", "internal", "external"}
    assert data["fig2"]["orca_pow2"]["external"]["paper"] == 41.6
    assert data["fig13a"]["orca_max"] == {"pagedkv": 7.0, "paper": 7.0}
    assert "fig15" not in data and data["setting"]["seeds"] == [0]
    assert sorted(p.name for p in out.iterdir()) == ["fig13a.png", "fig2.png"]


def test_time_model_options_reach_the_report(trace: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["paper", "--trace", trace, "--figures", "fig13a", "--no-figures", *SHORT]
    assert main([*argv, "--host-overhead-ms", "4", "--hbm-efficiency", "0.9"]) == 0
    text = capsys.readouterr().out
    assert "host 4.0 ms" in text and "90% of 1,555 GB/s" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--figures", "fig3"], "fig3"),
        (["--seeds", "a"], "--seeds 'a'"),
        (["--window", "500", "100"], "window="),
        (["--hbm-efficiency", "2"], "hbm_efficiency=2.0"),
        (["--trace", "/no/such/file.csv"], "/no/such/file.csv"),
    ],
)
def test_bad_options_fail_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["paper", "--no-figures", *args]) == 2
    assert message in capsys.readouterr().err
