"""Output files: bad paths refused up front naming the flag, writes atomic even when interrupted."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from pagedkv.errors import UsageError
from pagedkv.outputs import IMAGE_SUFFIXES, atomic_path, check_output_dir, check_output_file, write_json


def test_a_folder_given_as_a_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^--out .*: is a folder"):
        check_output_file(tmp_path, "--out", IMAGE_SUFFIXES)


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^--json .*does not exist"):
        check_output_file(tmp_path / "nope" / "m.json", "--json")


def test_an_unsupported_extension_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^--out .*plot.txt: unsupported file type '.txt'"):
        check_output_file(tmp_path / "plot.txt", "--out", IMAGE_SUFFIXES)
    assert check_output_file(tmp_path / "plot.PNG", "--out", IMAGE_SUFFIXES) == tmp_path / "plot.PNG"


def test_a_read_only_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # os.access stands in for a read-only mount: root (as in CI) may write into a chmod-ed folder.
    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != folder)
    with pytest.raises(UsageError, match=r"^--out .*the folder .*ro is not writable"):
        check_output_file(folder / "a.png", "--out", IMAGE_SUFFIXES)


def test_output_dir_checks(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match=r"^--out-dir .*: is a file"):
        check_output_dir(tmp_path / "file", "--out-dir")
    with pytest.raises(UsageError, match="does not exist"):
        check_output_dir(tmp_path / "a" / "b", "--out-dir")
    assert check_output_dir(tmp_path / "new", "--out-dir") == tmp_path / "new"


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    target.write_text('{"good": true}')
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text('{"trunc')
        raise KeyboardInterrupt
    assert json.loads(target.read_text()) == {"good": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_a_finished_write_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    target.write_text("old")
    write_json(target, {"a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
    assert stat.S_IMODE(target.stat().st_mode) & 0o600 == 0o600
