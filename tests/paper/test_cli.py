"""`pagedkv paper` follows the command rules: options and output paths checked before the first
simulation (one line naming the flag, exit 2), atomic outputs, Ctrl-C -> exit 130 with nothing
half-written, and the table, JSON and PNGs it promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pagedkv.cli import main
from pagedkv.paper import fig12
from pagedkv.paper import run as paper_run

SHORT = ["--seeds", "0,1", "--duration", "150", "--window", "50", "150"]


def _exit_code(argv: list[str]) -> int:
    """`main`'s exit status, whether it returns it or the parser exits with it (values checked by type)."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


@pytest.fixture
def no_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a simulation starts: every check below must come first."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a simulation started before the options were checked")

    monkeypatch.setattr(paper_run, "run_task", refuse)
    monkeypatch.setattr(fig12, "run_fig12_point", refuse)


def test_paper_prints_the_table_and_writes_json_and_figures(
    trace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "figs"
    argv = ["paper", "--trace", trace, "--figures", "fig2,fig13a", "--json", str(tmp_path / "paper.json")]
    assert main([*argv, *SHORT, "--out-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Figure 2: KV cache usage" in text and "Figure 13a" in text and "Figure 15" not in text
    assert "step = host 10.0 ms" in text  # the time model is stated with its numbers and sources
    assert "mean over 2 seeds" in text and "min-max" in text
    data = json.loads((tmp_path / "paper.json").read_text())
    assert set(data["fig2"]) == {"orca-max", "orca-pow2", "orca-oracle", "paged"}
    assert set(data["fig2"]["orca-pow2"]) == {"token_states", "reservation", "internal", "external"}
    assert data["fig2"]["orca-pow2"]["external"]["paper"] == 41.6
    assert data["fig13a"]["orca-max"] == {
        "pagedkv": 7.0,
        "paper": 7.0,
        "spread": {"min": 7.0, "max": 7.0, "std": 0.0},
    }
    assert "fig15" not in data and data["setting"]["seeds"] == [0, 1]
    assert sorted(p.name for p in out.iterdir()) == ["fig13a.png", "fig2.png"]  # no temporary left


def test_time_model_options_reach_the_report(trace: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["paper", "--trace", trace, "--figures", "fig13a", "--no-figures", *SHORT]
    assert main([*argv, "--host-overhead-ms", "4", "--hbm-efficiency", "0.9"]) == 0
    text = capsys.readouterr().out
    assert "host 4.0 ms" in text and "90% of 1,555 GB/s" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--figures", "fig3"], "--figures fig3: choose among fig2, fig12, fig13a, fig15, fig18b"),
        (
            ["--fig12-panels", "OPT-7B"],
            "--fig12-panels OPT-7B: choose distinct panels among OPT-13B, OPT-66B",
        ),
        (["--fig12-duration", "30"], "--fig12-duration 30: must be longer than the 60-s warm-up"),
        (["--fig12-threshold", "0"], "argument --fig12-threshold: must be a number > 0, got '0'"),
        (["--seeds", "a"], "argument --seeds: expected seeds such as 0-9 or 0,1,2, got 'a'"),
        (["--seeds", "1,1"], "argument --seeds: expected distinct seeds >= 0, at least one, got '1,1'"),
        (["--window", "500", "100"], "--window 500 100: must satisfy 0 <= START < END <= duration 900"),
        (["--duration", "0"], "argument --duration: must be a number > 0, got '0'"),
        (["--fig2-rate", "-1"], "argument --fig2-rate: must be a number > 0, got '-1'"),
        (["--beam-prune-prob", "2"], "argument --beam-prune-prob: must be a number in [0, 1], got '2'"),
        (["--hbm-efficiency", "2"], "argument --hbm-efficiency: must be a number in (0, 1], got '2'"),
        (["--compute-efficiency", "0"], "argument --compute-efficiency: must be a number in (0, 1]"),
        (["--host-overhead-ms", "-1"], "argument --host-overhead-ms: must be a number >= 0, got '-1'"),
        (["--max-num-batched-tokens", "2000"], "--max-num-batched-tokens 2000: must be >= 2,047"),
        (["--max-num-seqs", "3000"], "--max-num-seqs 3000: must be <= max_num_batched_tokens 2,560"),
        (["--trace", "/no/such/file.csv"], "--trace /no/such/file.csv: no such file"),
        (["--jobs", "0"], "argument --jobs: must be an integer >= 1, got '0'"),
        (["--jobs", "2", "--ray"], "--jobs: Ray schedules the tasks itself; give --jobs or --ray, not both"),
    ],
)
def test_bad_options_fail_before_simulating_with_one_line_naming_the_flag(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], no_simulation: None
) -> None:
    assert _exit_code(["paper", "--no-figures", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("flag", "make", "message"),
    [
        ("--json", lambda tmp: tmp / "missing" / "paper.json", "the folder"),
        ("--json", lambda tmp: tmp, "is a folder"),
        ("--out-dir", lambda tmp: tmp / "file.txt", "is a file, not a folder"),
        ("--out-dir", lambda tmp: tmp / "missing" / "figs", "does not exist"),
    ],
)
def test_output_paths_are_checked_before_simulating(
    trace: str,
    tmp_path: Path,
    flag: str,
    make: object,
    message: str,
    capsys: pytest.CaptureFixture[str],
    no_simulation: None,
) -> None:
    (tmp_path / "file.txt").write_text("not a folder")
    path = make(tmp_path)  # type: ignore[operator]
    assert main(["paper", "--trace", trace, *SHORT, flag, str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{flag} {path}" in err and message in err


def test_missing_matplotlib_is_reported_before_simulating(
    trace: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_simulation: None
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "matplotlib" else real(name)
    )
    assert main(["paper", "--trace", trace, *SHORT]) == 2
    assert "needs matplotlib" in capsys.readouterr().err


def test_ctrl_c_while_writing_json_keeps_the_old_file(
    trace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "paper.json"
    target.write_text('{"old": true}')
    original = Path.write_text

    def interrupted(self: Path, text: str, *args: object, **kwargs: object) -> int:
        original(self, text[: len(text) // 2])  # half of it reaches the disk, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", interrupted)
    argv = ["paper", "--trace", trace, "--figures", "fig13a", "--no-figures", "--json", str(target), *SHORT]
    assert main(argv) == 130
    monkeypatch.undo()
    assert "interrupted" in capsys.readouterr().err
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["paper.json"]  # no temporary file left


def test_ctrl_c_while_drawing_leaves_no_partial_png(
    trace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.figure

    out = tmp_path / "figs"
    out.mkdir()
    (out / "fig13a.png").write_bytes(b"good old figure")

    def interrupted(self: object, path: object, **kwargs: object) -> None:
        Path(str(path)).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", interrupted)
    argv = ["paper", "--trace", trace, "--figures", "fig13a", "--out-dir", str(out), *SHORT]
    assert main(argv) == 130
    assert [p.name for p in out.iterdir()] == ["fig13a.png"]
    assert (out / "fig13a.png").read_bytes() == b"good old figure"


def test_the_figures_do_not_depend_on_the_number_of_processes(trace: str, tmp_path: Path) -> None:
    """Every simulation is a task of `pagedkv.runner`: one process or a pool gives the same JSON."""
    argv = ["paper", "--trace", trace, "--figures", "fig13a,fig18b", "--no-figures", *SHORT]
    for jobs in ("1", "2"):
        assert main([*argv, "--jobs", jobs, "--json", str(tmp_path / f"{jobs}.json")]) == 0
    one, two = (json.loads((tmp_path / f"{jobs}.json").read_text()) for jobs in ("1", "2"))
    assert one.pop("wall_seconds") > 0 and two.pop("wall_seconds") > 0
    assert one == two
