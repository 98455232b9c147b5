"""docs/serving.md's Python snippets run as written, and the numbers its prose quotes are what they print."""

from __future__ import annotations

import re
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "serving.md"


def test_the_snippets_run_and_print_the_numbers_the_prose_quotes() -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks
    out = StringIO()
    with redirect_stdout(out):
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), {})
    printed = out.getvalue()
    assert "= KV cache per GPU                       37.43 GiB" in printed
    assert "30,660 blocks" in printed and "28.8 ms for 64 sequences" in printed
    for quoted in ("37.43 GiB", "30,660 blocks", "28.8 ms", "32.86 GiB", "1.56 GiB"):
        assert quoted in text, quoted
