"""torch's thread count: by default the cores this process may use minus the load average (at least
1), applied by `LLM` and `pagedkv generate` unless the caller names a number. Cores and load are
monkeypatched, and torch's setter is replaced by a recorder, so nothing depends on this machine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pagedkv.engine import threads
from pagedkv.errors import InvalidArgument


@pytest.fixture
def machine(monkeypatch):
    """Pretend 8 usable cores; `machine(load)` sets the 1-minute load average (None: unavailable)."""
    monkeypatch.setattr(threads, "available_cores", lambda: 8)

    def set_load(load: float | None) -> None:
        def getloadavg() -> tuple[float, float, float]:
            if load is None:
                raise OSError("no load average")
            return (load, 0.0, 0.0)

        monkeypatch.setattr(threads.os, "getloadavg", getloadavg)

    return set_load


@pytest.mark.parametrize(
    ("load", "expected"),
    [(0.0, 8), (0.3, 8), (2.6, 5), (5.4, 3), (7.4, 1), (7.6, 1), (31.0, 1), (None, 8)],
)
def test_default_is_the_cores_not_busy(machine, load: float | None, expected: int) -> None:
    machine(load)
    assert threads.default_num_threads() == expected


def test_available_cores_are_the_affinity_mask(monkeypatch) -> None:
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 16)
    assert threads.available_cores() == 3
    monkeypatch.delattr(threads.os, "sched_getaffinity", raising=False)  # not on Linux
    assert threads.available_cores() == 16


@pytest.fixture
def torch_threads(monkeypatch) -> list[int]:
    """Every value passed to `torch.set_num_threads`, in order. torch's real setting is left alone:
    `get_num_threads` reads the last value recorded (the Numba kernel reads it too)."""
    torch = pytest.importorskip("torch")
    calls: list[int] = [torch.get_num_threads()]
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr(torch, "get_num_threads", lambda: calls[-1])
    return calls


def test_set_num_threads_applies_the_default_or_the_given_number(machine, torch_threads) -> None:
    machine(2.6)
    assert threads.set_num_threads(None) == 5
    assert threads.set_num_threads(2) == 2
    assert torch_threads[1:] == [5, 2]
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InvalidArgument, match="num_threads must be a positive int"):
            threads.set_num_threads(bad)
    assert torch_threads[1:] == [5, 2]


def test_llm_applies_the_default_unless_given(machine, torch_threads, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from checkpoints import save_checkpoint

    from pagedkv.engine import LLM

    folder = save_checkpoint(tmp_path, "llama", seed=3)
    machine(5.4)
    assert LLM(folder, num_blocks=16, block_size=4).num_threads == 3
    assert LLM(folder, num_blocks=16, block_size=4, num_threads=2).num_threads == 2
    assert torch_threads[1:] == [3, 2]


def test_generate_command_applies_the_default_unless_given(machine, torch_threads, capsys) -> None:
    pytest.importorskip("transformers")
    from pagedkv.cli import main

    machine(5.4)
    args = ["generate", "--layers", "1", "--hidden", "32", "--vocab", "64", "--num-prompts", "2"]
    args += ["--max-prompt-len", "8", "--max-tokens", "2", "--num-blocks", "8", "--block-size", "4"]
    assert main(args) == 0
    assert main([*args, "--threads", "2"]) == 0
    assert torch_threads[1:] == [3, 2]
    reports = re.findall(r"; (\d+) threads", capsys.readouterr().out)
    assert reports == ["3", "2"]
