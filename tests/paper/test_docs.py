"""docs/paper.md's Python snippet runs as written (it needs the ShareGPT trace, like the figures)."""

from __future__ import annotations

import re
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "paper.md"


def test_the_snippet_runs_through_a_process_pool(trace: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(blocks) == 1
    out = StringIO()
    with redirect_stdout(out):
        exec(compile(blocks[0], str(DOC), "exec"), {})
    first, second = out.getvalue().splitlines()
    assert first == "8"
    assert second.startswith("{'orca-max': 7.0, 'orca-pow2': ")
