"""The `pagedkv` console script: it is installed, prints help, and runs the block-manager demo."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from pagedkv.cli import main
from pagedkv.options import Formatter

SCRIPT = Path(sys.executable).with_name("pagedkv")


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.exists(), f"console script not installed next to {sys.executable}; run `pip install -e .`"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False)


def test_console_script_prints_help() -> None:
    result = run_script("--help")
    assert result.returncode == 0, result.stderr
    assert "usage: pagedkv" in result.stdout
    assert "demo" in result.stdout


def test_console_script_without_a_command_prints_help() -> None:
    result = run_script()
    assert result.returncode == 0, result.stderr
    assert "usage: pagedkv" in result.stdout


def test_console_script_runs_the_demo() -> None:
    result = run_script("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # 10 tokens in blocks of 4, fork, one token into the shared partial block, 3 more tokens for A
    assert "A -> [0, 1, 2]" in out
    assert "[(2, 3)]" in out  # B's copy-on-write of block 2 into the free-list head
    assert "B -> [0, 1, 3]" in out
    assert "A -> [0, 1, 2, 4]" in out
    assert "translate(A, 9) = (2, 1)" in out
    assert "16/16" in out


def test_unknown_command_fails() -> None:
    result = run_script("no-such-command")
    assert result.returncode != 0
    assert "no-such-command" in result.stderr


def test_main_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_a_bad_option_is_one_line_naming_the_flag_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--block-size", "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "pagedkv demo: error: argument --block-size: must be an integer >= 1, got '0' "
        "(see pagedkv demo --help)\n"
    )


def test_main_reports_a_pagedkv_error_with_exit_code_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pagedkv.demo
    from pagedkv.errors import UsageError

    def refuse(args: object) -> int:
        raise UsageError("--block-size 3: not today")

    monkeypatch.setattr(pagedkv.demo, "run", refuse)
    assert main(["demo"]) == 2
    assert capsys.readouterr().err == "pagedkv demo: error: --block-size 3: not today\n"


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """More output than a pipe holds, read by `head -1`: the writer gets EPIPE and must end quietly."""
    script = tmp_path / "loud.py"
    script.write_text(
        "import sys\n"
        "import pagedkv.demo\n"
        "from pagedkv.cli import main\n"
        "pagedkv.demo.run = lambda args: [print('block', i) for i in range(200_000)] and 0\n"
        "sys.exit(main(['demo']))\n"
    )
    done = subprocess.run(
        f"{sys.executable} {script} | head -1; echo rc=${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout.splitlines() == ["block 0", "rc=141"]
    assert done.stderr == ""


def test_version_and_python_dash_m() -> None:
    from pagedkv import __version__

    result = subprocess.run(
        [sys.executable, "-m", "pagedkv", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"pagedkv {__version__}"


def test_ctrl_c_prints_one_line_and_exits_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pagedkv.demo

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(pagedkv.demo, "run", interrupted)
    assert main(["demo"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "interrupted\n"


def test_ctrl_c_while_the_commands_load_is_one_line_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pagedkv.cli

    def interrupted() -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(pagedkv.cli, "build_parser", interrupted)
    assert main(["demo"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_every_option_shows_its_default_once_and_never_empty() -> None:
    """An option whose help already speaks of its default gets none appended (two could disagree), and
    an empty default is not shown."""
    from pagedkv.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in commands.choices.items():
        formatter = command._get_formatter()
        assert isinstance(formatter, Formatter), name
        for action in command._actions:
            shown = formatter._get_help_string(action)
            where = f"pagedkv {name} {'/'.join(action.option_strings)}: {shown}"
            if "default" in (action.help or ""):
                assert shown == action.help, where
            assert "(default: )" not in shown, where
