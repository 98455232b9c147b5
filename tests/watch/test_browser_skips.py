"""Without the Playwright package, the browser tests skip and say why; they never break collection.

A checkout installed without the `dev` extra (or a stale virtual environment) has no Playwright. The
check runs `test_browser.py` in a child pytest whose import system refuses `playwright` (the package is
installed here, so only a child process can see it missing), and reads its outcome.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BROWSER_TESTS = str(Path(__file__).resolve().parent / "test_browser.py")

_WITHOUT_PLAYWRIGHT = """
import sys

class NoPlaywright:
    def find_spec(self, name, path=None, target=None):
        if name == "playwright" or name.startswith("playwright."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoPlaywright())
import pytest

sys.exit(pytest.main(sys.argv[1:]))
"""


def test_browser_tests_skip_with_a_reason_without_playwright() -> None:
    child = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PLAYWRIGHT, "-q", "-rs", "-p", "no:cacheprovider", BROWSER_TESTS],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(BROWSER_TESTS).parents[2],
    )
    out = child.stdout + child.stderr
    # the whole module skipped: no test collected (a collection error would be ExitCode.INTERRUPTED)
    assert child.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, out
    assert "1 skipped" in out and "error" not in out.lower(), out
    assert "SKIPPED" in out and "the Playwright package is not installed" in out, out
