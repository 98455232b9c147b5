"""Every Python snippet of docs/engine.md, docs/tensors.md and the README's engine section runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

REPO = Path(__file__).resolve().parents[2]


def snippets() -> list[tuple[str, str]]:
    readme = (REPO / "README.md").read_text()
    engine_section = readme[readme.index("<!-- tensors:begin -->") : readme.index("<!-- tensors:end -->")]
    found = []
    for name, text in (
        ("README.md", engine_section),
        ("docs/engine.md", (REPO / "docs/engine.md").read_text()),
        ("docs/tensors.md", (REPO / "docs/tensors.md").read_text()),
    ):
        for i, code in enumerate(re.findall(r"```python\n(.*?)```", text, flags=re.S)):
            found.append((f"{name}#{i}", code))
    return found


def test_there_are_snippets_in_each_file() -> None:
    assert {name.split("#")[0] for name, _ in snippets()} == {
        "README.md",
        "docs/engine.md",
        "docs/tensors.md",
    }


@pytest.mark.parametrize(("name", "code"), snippets(), ids=[name for name, _ in snippets()])
def test_snippet_runs_as_written(name: str, code: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stderr[-3000:]}"
