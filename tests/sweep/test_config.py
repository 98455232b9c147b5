"""The TOML sweep file: read as written (order kept), and every mistake named with the file and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pagedkv.errors import UsageError
from pagedkv.sweep.config import SweepFile, read_config

EXAMPLE = """
[grid]
rate = [1, 2.5, 4]
block-size = [8, 16]
enable-prefix-caching = [true, false]

[fixed]
num-requests = 2000
caches = "orca-max,paged"
prompt-range = [1, 512]

[[plot]]
metric = "e2e_s_mean"
x = "rate"
lines = "block-size"

[[plot]]
metric = "tokens_per_s"
x = "block-size"
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return str(path)


def test_reads_grid_fixed_and_plots_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    assert read_config(path) == SweepFile(
        path=path,
        axes={"rate": [1, 2.5, 4], "block-size": [8, 16], "enable-prefix-caching": [True, False]},
        fixed={"num-requests": 2000, "caches": "orca-max,paged", "prompt-range": [1, 512]},
        plots=["e2e_s_mean:rate:block-size", "tokens_per_s:block-size"],
    )
    assert list(read_config(path).axes) == ["rate", "block-size", "enable-prefix-caching"]


def test_a_file_with_only_a_grid(tmp_path: Path) -> None:
    path = write(tmp_path, "[grid]\nseed = [0, 1]\n")
    assert read_config(path) == SweepFile(path, {"seed": [0, 1]}, {}, [])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[grid\nrate = [1]", r"not valid TOML: .*line 1"),
        ("[axes]\nrate = [1]", r"unknown table 'axes'; a sweep file has \[grid\], \[fixed\], \[\[plot\]\]"),
        ("[grid]\nrate = 2", r"\[grid\] rate: an axis is a non-empty list of values, e.g. rate = \[1, 2\]"),
        ("[grid]\nrate = []", r"\[grid\] rate: an axis is a non-empty list"),
        ("grid = 3", r"\[grid\]: must be a table"),
        ("[[plot]]\nmetric = 'batch_mean'", r"\[\[plot\]\] #1: needs metric and x"),
        ("[[plot]]\nmetric = 'a'\nx = 'rate'\ncolor = 'red'", r"\[\[plot\]\] #1: unknown key 'color'"),
        ("[plot]\nmetric = 'a'", r"plots are \[\[plot\]\] tables"),
    ],
)
def test_mistakes_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UsageError, match=rf"^--config {re.escape(path)}:? .*{message}"):
        read_config(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^--config .*nope.toml: no such file$"):
        read_config(str(tmp_path / "nope.toml"))
    with pytest.raises(UsageError, match=r"is a folder; give the TOML file$"):
        read_config(str(tmp_path))
