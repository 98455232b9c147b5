"""results.csv: valid on disk after every point, extended when a new metric appears, and read back
by --resume (finished points kept, failed points and a half-written last line dropped)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pagedkv.errors import UsageError
from pagedkv.sweep.options import point_key
from pagedkv.sweep.table import ResultsTable, failure_row, point_rows

INPUTS = ["rate", "block_size"]
HEAD = ["rate", "block_size", "point", "cache", "error"]


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert all(None not in row and None not in row.values() for row in rows), "a row with missing fields"
    return list(reader.fieldnames or []), rows


def point(rate: str, **metrics: float) -> list[dict[str, str]]:
    """A point given only its rate; run_point reports the block size it used (16) and the rate."""
    rows = [
        {"cache": cache, "rate": float(rate), "block_size": 16, **metrics} for cache in ("naive", "paged")
    ]
    return point_rows({"rate": rate, "block_size": ""}, f"k{rate}", rows, options={"rate", "block_size"})


def test_every_point_is_on_disk_when_added_and_new_metrics_extend_the_header(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    table = ResultsTable.open(path, INPUTS, resume=False)
    assert read(path) == (HEAD, [])
    table.add_point(point("1.0", steps=10))
    header, rows = read(path)
    assert header == [*HEAD, "steps"]
    assert rows == [
        {"rate": "1.0", "block_size": "16", "point": "k1.0", "cache": "naive", "error": "", "steps": "10"},
        {"rate": "1.0", "block_size": "16", "point": "k1.0", "cache": "paged", "error": "", "steps": "10"},
    ]  # the block size the run used, not the empty default it was given
    table.add_point(failure_row({"rate": "2.0", "block_size": ""}, "k2.0", "trace.csv: no such file"))
    failed = {
        "rate": "2.0",
        "block_size": "",
        "point": "k2.0",
        "cache": "",
        "error": "trace.csv: no such file",
    }
    assert read(path)[1][2] == {**failed, "steps": ""}
    table.add_point(point("3.0", steps=7, swap_ins=2))
    header, rows = read(path)
    assert header == [*HEAD, "steps", "swap_ins"]
    assert [(r["point"], r["cache"], r["error"], r["steps"], r["swap_ins"]) for r in rows] == [
        ("k1.0", "naive", "", "10", ""),
        ("k1.0", "paged", "", "10", ""),
        ("k2.0", "", "trace.csv: no such file", "", ""),
        ("k3.0", "naive", "", "7", "2"),
        ("k3.0", "paged", "", "7", "2"),
    ]
    table.close()


def test_resume_keeps_finished_points_and_drops_failures_and_a_cut_last_line(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    table = ResultsTable.open(path, INPUTS, resume=False)
    table.add_point(point("1.0", steps=10))
    table.add_point(failure_row({"rate": "2.0", "block_size": ""}, "k2.0", "boom"))
    table.add_point(point("3.0", steps=7))
    table.close()
    with path.open("a") as handle:
        handle.write("4.0,16,k4.0,paged,,1")  # killed in mid-write: no newline
    resumed = ResultsTable.open(path, INPUTS, resume=True)
    assert resumed.done() == {"k1.0", "k3.0"}
    _, rows = read(path)
    assert [(r["point"], r["cache"]) for r in rows] == [
        (k, c) for k in ("k1.0", "k3.0") for c in ("naive", "paged")
    ]
    resumed.add_point(point("2.0", steps=5))
    resumed.finish(["k1.0", "k2.0", "k3.0"])
    resumed.close()
    _, rows = read(path)
    assert [(r["rate"], r["cache"], r["steps"]) for r in rows] == [
        ("1.0", "naive", "10"),
        ("1.0", "paged", "10"),
        ("2.0", "naive", "5"),
        ("2.0", "paged", "5"),
        ("3.0", "naive", "7"),
        ("3.0", "paged", "7"),
    ]


def test_without_resume_the_table_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    table = ResultsTable.open(path, INPUTS, resume=False)
    table.add_point(point("1.0", steps=10))
    table.close()
    assert ResultsTable.open(path, INPUTS, resume=False).done() == set()
    assert read(path)[1] == []


def test_finish_puts_rows_of_other_grids_last(tmp_path: Path) -> None:
    table = ResultsTable.open(tmp_path / "results.csv", INPUTS, resume=False)
    for rate in ("5.0", "1.0", "2.0"):
        table.add_point(point(rate, steps=1))
    table.finish(["k2.0", "k1.0"])
    table.close()
    rates = [r["rate"] for r in read(tmp_path / "results.csv")[1]]
    assert rates == ["2.0", "2.0", "1.0", "1.0", "5.0", "5.0"]


def test_finish_orders_metric_columns_by_the_rows_not_by_completion(tmp_path: Path) -> None:
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    swap = point_rows(
        {"rate": "1.0", "block_size": ""}, "a", [{"cache": "paged", "swap_ins": 3, "steps": 9}], set()
    )
    plain = point_rows({"rate": "2.0", "block_size": ""}, "b", [{"cache": "orca", "steps": 5}], set())
    for path, points in ((first, [swap, plain]), (second, [plain, swap])):
        table = ResultsTable.open(path, INPUTS, resume=False)
        for rows in points:
            table.add_point(rows)
        table.finish(["a", "b"])
        table.close()
    assert first.read_text() == second.read_text()
    assert read(first)[0] == [*HEAD, "swap_ins", "steps"]


def test_resume_refuses_a_file_this_sweep_did_not_write(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text("rate,cache,error\n1.0,paged,\n")
    message = r"^--resume: .*results.csv was not written by this sweep \(no column 'block_size'\)"
    with pytest.raises(UsageError, match=message):
        ResultsTable.open(path, INPUTS, resume=True)
    assert path.read_text() == "rate,cache,error\n1.0,paged,\n"


def test_a_point_key_is_its_inputs_whatever_their_order() -> None:
    key = point_key({"rate": "1.0", "block_size": "16"})
    assert key == point_key({"block_size": "16", "rate": "1.0"})
    assert len(key) == 16 and int(key, 16) >= 0
    assert key != point_key({"rate": "1.0", "block_size": ""})
