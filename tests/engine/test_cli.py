"""`pagedkv generate`: every option checked before torch is imported; --model streams text; random
weights report tokens/s and block usage."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pagedkv.cli import build_parser, main


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from pagedkv.cli import build_parser; build_parser(); "
        "print(sys.modules.get('torch') is not None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def generate_help() -> str:
    sub = build_parser()._subparsers._group_actions[0].choices["generate"]
    return sub.format_help()


def test_help_describes_every_option_and_shows_each_default_once() -> None:
    sub = build_parser()._subparsers._group_actions[0].choices["generate"]
    text = " ".join(sub.format_help().split())
    for action in sub._actions:
        assert action.help, f"{action.option_strings} has no help"
    assert text.count("(default: 32)") == 1  # --max-tokens
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "--threads N torch intra-op threads; default: one per core not busy" in text
    assert "--n N samples per prompt" in text and "{llama,mistral,qwen2,qwen3,gemma3}" in text


BAD = [
    (["--layers", "0"], "--layers must be >= 1, got 0"),
    (["--hidden", "0"], "--hidden must be >= 1, got 0"),
    (["--heads", "3"], "--heads 3 must divide --hidden 256"),
    (["--kv-heads", "0"], "--kv-heads must be >= 1, got 0"),
    (["--kv-heads", "3"], "--kv-heads 3 must divide --heads 8"),
    (["--vocab", "0"], "--vocab must be >= 1, got 0"),
    (["--min-prompt-len", "50", "--max-prompt-len", "10"], "--min-prompt-len 50 exceeds --max-prompt-len 10"),
    (["--temperature", "nan"], "--temperature must be >= 0 (0 = greedy), got nan"),
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--num-prompts", "0"], "--num-prompts must be >= 1, got 0"),
    (["--n", "0"], "--n must be >= 1, got 0"),
    (["--n", "5", "--max-num-seqs", "4"], "--n 5 exceeds --max-num-seqs 4"),
    (["--max-tokens", "0"], "--max-tokens must be >= 1, got 0"),
    (["--min-tokens", "40"], "--min-tokens 40 exceeds --max-tokens 32"),
    (
        ["--max-tokens", "2000"],
        "--shared-prefix + --max-prompt-len + --max-tokens = 2096 exceeds --max-position",
    ),
    (["--num-blocks", "0"], "--num-blocks must be >= 1, got 0"),
    (["--num-blocks", "3"], "--num-blocks 3 cannot hold one sequence of 127 tokens"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["--prompt", "hi"], "--prompt needs --model"),
    (["--stop", "x"], "--stop needs --model"),
    (["--model", "/no/such/dir", "--prompt", "x"], "--model /no/such/dir: no such folder"),
    (["--model", "/", "--prompt", "x"], "--model /: no config.json"),
    (["--model", "/", "--prompt", "x", "--layers", "3"], "--layers applies to random weights only"),
    (["--model", "/"], "--model needs at least one --prompt"),
    (
        [
            "--num-blocks",
            str(10**7),
            "--layers",
            "32",
            "--hidden",
            "4096",
            "--heads",
            "32",
            "--kv-heads",
            "8",
        ],
        "--num-blocks 10,000,000 (KV cache) plus the weights needs 39,078.53 GiB but only",
    ),
]


def test_bad_options_fail_fast_naming_the_flag_without_importing_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from pagedkv.cli import main\n"
        f"for args, _ in {BAD!r}:\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        code = main(['generate', *args])\n"
        "    print(code, err.getvalue().strip().replace(chr(10), ' | '))\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    lines = out.stdout.splitlines()
    assert lines[-1] == "torch imported: False"
    for (args, message), line in zip(BAD, lines, strict=False):
        code, text = line.split(" ", 1)
        assert code == "2", (args, line)
        assert text.startswith("pagedkv generate: error: ") and message in text, (args, text)
        assert " | " not in text  # one line


def test_random_weights_report_speed_usage_and_match_hf(capsys) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    args = ["generate", "--layers", "2", "--hidden", "64", "--vocab", "128", "--num-prompts", "4"]
    args += ["--max-prompt-len", "20", "--max-tokens", "6", "--num-blocks", "12", "--block-size", "4"]
    args += [
        "--dtype",
        "float64",
        "--enable-prefix-caching",
        "--shared-prefix",
        "8",
        "--check",
        "--threads",
        "1",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"24 tokens generated in [\d.]+ s = [\d.]+ tokens/s \(\d+ steps\); warm-up .* [\d.]+ s", out
    )
    assert "1 threads" in out
    assert re.search(r"block usage: peak \d+% \(\d+/12 blocks", out)
    assert "check against HF generate: 4/4 identical" in out


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    pytest.importorskip("tokenizers")
    from checkpoints import save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("cli"), "qwen3", seed=2)


def test_model_streams_text_to_the_terminal(folder: Path, capsys) -> None:
    from pagedkv.engine import LLM, SamplingParams

    args = [
        "generate",
        "--model",
        str(folder),
        "--prompt",
        "Hello world",
        "--max-tokens",
        "10",
        "--ignore-eos",
    ]
    assert main([*args, "--dtype", "float64", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    llm = LLM(folder, dtype="float64")
    (expected,) = llm.generate("Hello world", SamplingParams(temperature=0, max_tokens=10, ignore_eos=True))
    assert captured.out == expected.outputs[0].text + "\n"
    assert re.search(r"10 tokens in [\d.]+ s \([\d.]+ tokens/s, 1 threads\)", captured.err)


def test_model_num_blocks_too_large_is_refused_before_loading(folder: Path, capsys) -> None:
    args = ["generate", "--model", str(folder), "--prompt", "x", "--num-blocks", str(10**11)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(
        r"pagedkv generate: error: --num-blocks 100,000,000,000 \(KV cache\) plus the weights needs "
        r"[\d,.]+ GiB but only [\d,.]+ GiB of memory is available; lower --num-blocks or --dtype",
        err,
    )


def test_model_several_prompts_and_chat(folder: Path, capsys) -> None:
    args = ["generate", "--model", str(folder), "--prompt", "Hello", "--prompt", "Paged", "--chat"]
    args += ["--n", "2", "--temperature", "0.8", "--max-tokens", "4", "--ignore-eos", "--threads", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    labels = sorted(line.split("]")[0] + "]" for line in out)
    assert labels == [f"[prompt {p}, sample {s}]" for p in (0, 1) for s in (0, 1)]
