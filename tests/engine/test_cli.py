"""`pagedkv generate` runs the engine on a random-init model and reports tokens/s and block usage."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from pagedkv.cli import main


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from pagedkv.cli import build_parser; build_parser(); "
        "print(sys.modules.get('torch') is not None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_family_choices_are_the_model_families() -> None:
    pytest.importorskip("torch")
    from pagedkv.cli import build_parser
    from pagedkv.engine.models import FAMILIES

    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    (family,) = [action for action in generate._actions if action.dest == "family"]
    assert tuple(family.choices) == FAMILIES


def test_generate_reports_speed_usage_and_matches_hf(capsys) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    args = ["generate", "--layers", "2", "--hidden", "64", "--vocab", "128", "--num-prompts", "4"]
    args += ["--max-prompt-len", "20", "--max-new-tokens", "6", "--num-blocks", "12", "--block-size", "4"]
    args += ["--dtype", "float64", "--prefix-caching", "--shared-prefix", "8", "--check"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "tokens/s" in out
    assert re.search(r"block usage: peak \d+% \(\d+/12 blocks", out)
    assert "check against HF generate: 4/4 identical" in out
