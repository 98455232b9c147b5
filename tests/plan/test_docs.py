"""docs/plan.md's snippets run as written and print what the page quotes; the README's plan section shows
the same command.

The bash snippet reads ``../shared/data/traces/...`` as the repository's own checkout does, so it runs in
a folder next to a ``shared`` link to the traces' folder (skipped when the trace is absent).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "plan.md"
TRACE = "AzureLLMInferenceTrace_conv.csv"


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.slow
def test_the_command_prints_the_table_the_page_quotes(
    tmp_path: Path, real_trace: Callable[[str], Path]
) -> None:
    (tmp_path / "shared").symlink_to(real_trace(TRACE).resolve().parents[2])  # shared/data/traces/TRACE
    run = tmp_path / "run"
    run.mkdir()
    text = DOC.read_text(encoding="utf-8")
    (command,) = blocks(text, "bash")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PAGEDKV_TRACES", None)
    done = subprocess.run(["bash", "-e", "-c", command], cwd=run, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    quoted = blocks(text, "text")[0]
    for line in quoted.strip().splitlines():
        assert line in done.stdout, line
    assert sorted(p.name for p in run.iterdir()) == ["plan.csv", "plan.json", "plan.png"]


def test_the_python_snippet_prints_what_the_page_says() -> None:
    text = DOC.read_text(encoding="utf-8")
    (snippet,) = blocks(text, "python")
    out = StringIO()
    with redirect_stdout(out):
        exec(compile(snippet, str(DOC), "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines == ["max_num_seqs=8 found 3.21", "max_num_seqs=32 found 13.45"]
    for line in lines:
        assert f"`{line}`" in text


def test_the_readme_shows_the_documented_command_and_plot() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("<!-- plan:begin -->") : readme.index("<!-- plan:end -->")]
    (command,) = blocks(DOC.read_text(encoding="utf-8"), "bash")
    (shown,) = blocks(section, "bash")
    assert shown == command
    assert "(docs/plan.png)" in section and (REPO / "docs" / "plan.png").stat().st_size < 150_000
