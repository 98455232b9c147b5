"""Every command the README and docs show is one pagedkv accepts, and their Python snippets run.

- Every `pagedkv ...` / `python simulate.py ...` line of a ```bash block parses with the real parser
  (flags exist, values have the right type); `simulate` and `watch` lines also pass the checks made
  before a run (`build_run`: options that cannot apply, sizes, traces, models), so a snippet that
  would stop with "error:" fails here. Running each one whole is the release check (see the closing
  notes); this keeps them honest on every test run.
- Python snippets not run by their own document's test (README's core section, docs/simulator.md)
  run here, as written, from the repository root.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from pagedkv.cli import build_parser
from pagedkv.simulator.traces import find_trace

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                command = line.split(" #")[0].strip()
                if command.startswith(("pagedkv ", "python simulate.py")):
                    found.append((doc.name, command))
    return found


COMMANDS = _commands()


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) >= 20  # a guard: the extraction finds the docs' commands
    assert {doc for doc, _ in COMMANDS} >= {"README.md", "simulator.md", "sweep.md", "watch.md"}


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_every_command_in_the_docs_is_accepted(
    doc: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = shlex.split(command)
    argv = ["simulate", *argv[2:]] if argv[0] == "python" else argv[1:]
    traces = [arg for arg in argv if "shared/data/traces/" in arg]
    if any(find_trace(Path(arg).name) is None for arg in traces):
        pytest.skip("shared traces not found ($PAGEDKV_TRACES, ../shared/data/traces)")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{doc}: `{command}` is refused: {err.getvalue().strip()}")
    if args.command in ("simulate", "watch"):
        from pagedkv.simulator.cli import build_run

        monkeypatch.chdir(REPO)
        build_run(args)  # the checks made before a run; raises UsageError naming the flag


def test_readme_core_and_simulator_python_snippets_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    core = readme.split("## The core manager", 1)[1].split("\n## ", 1)[0]
    simulator = (REPO / "docs" / "simulator.md").read_text(encoding="utf-8")
    snippets = [
        *re.findall(r"```python\n(.*?)```", core, flags=re.DOTALL),
        *re.findall(r"```python\n(.*?)```", simulator, flags=re.DOTALL),
    ]
    assert len(snippets) == 2
    for snippet in snippets:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(snippet, "snippet", "exec"), {})
