"""results.csv: the sweep's tidy table, appended one finished point at a time.

One row per point x cache: every simulate input (`SimulateOptions.columns`) as the run used it (what
`run_point` reports, defaults that depend on other options filled in), ``point`` (the point's key,
`options.point_key`, a digest of its inputs as given), ``cache``, ``error`` and every metric
`run_point` reports. A point that failed has one row with its inputs as given and the error, and no
cache or metrics. With ``--plan`` a point has one row: its inputs (the planner's included), its cache and
the plan's answer (`pagedkv.sweep.plans`).

Invariant: after every finished point the file on disk is a complete, valid CSV holding every point
finished so far: a point's rows go out in one write and are flushed before the next point is
awaited, and any change of header (a metric first seen in a later point) rewrites the file atomically.
So Ctrl-C, a killed process or a failed point never loses a finished point, and `--resume` skips
every point whose key it finds in a row without an error (failed points run again).

When the sweep completes, `finish` rewrites the rows in grid order (a point's caches together, in
simulate's order), so the same grid gives the same file whatever the backend or the completion order,
and `write_parquet` converts it (pyarrow, the ``pagedkv[parquet]`` extra) atomically.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from pagedkv.errors import UsageError
from pagedkv.outputs import atomic_path
from pagedkv.sweep.options import cell

PARQUET_EXTRA = "pip install 'pagedkv[parquet]'"
KEY_COLUMNS = ("point", "cache", "error")


class ResultsTable:
    """The results file at `path` (opened by `open`): rows are appended with `add_point`."""

    def __init__(self, path: Path, inputs: list[str]) -> None:
        self.path = path
        self.inputs = inputs
        self.header = [*inputs, *KEY_COLUMNS]
        self.rows: list[dict[str, str]] = []
        self._handle: TextIO | None = None

    @classmethod
    def open(cls, path: Path, inputs: list[str], resume: bool) -> ResultsTable:
        """A new table at `path`, or with `resume` the finished points of the one already there."""
        table = cls(path, inputs)
        if resume and path.exists():
            table._load()
        table._rewrite()
        return table

    def done(self) -> set[str]:
        """The key of every point with rows and no error."""
        return {row["point"] for row in self.rows if not row.get("error")}

    def add_point(self, rows: list[dict[str, str]]) -> None:
        """Append a finished point's rows (`point_rows` or `failure_row`) in one write."""
        added = [column for row in rows for column in row if column not in self.header]
        self.rows.extend(rows)
        if added:
            self.header.extend(dict.fromkeys(added))
            self._rewrite()
            return
        self._write(rows)

    def finish(self, order: Iterable[str]) -> None:
        """Rewrite the rows in grid `order` (rows of other grids after them, as they were), with the
        metric columns in the order their first value appears in those rows: the file then depends on
        the results only, not on which point finished first."""
        rank = {key: i for i, key in enumerate(order)}
        self.rows.sort(key=lambda row: rank.get(row["point"], len(rank)))
        fixed = self.header[: len(self.inputs) + len(KEY_COLUMNS)]
        seen = [column for row in self.rows for column, value in row.items() if value and column not in fixed]
        self.header = [*fixed, *dict.fromkeys([*seen, *self.header[len(fixed) :]])]
        self._rewrite()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _load(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        if not text.endswith("\n"):  # a last line cut short by a crash in mid-write: it runs again
            text = text[: text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(text))
        header = list(reader.fieldnames or [])
        missing = [column for column in [*self.inputs, *KEY_COLUMNS] if column not in header]
        if missing:
            raise UsageError(
                f"--resume: {self.path} was not written by this sweep (no column {missing[0]!r}); "
                "choose another --out-dir"
            )
        self.header = header
        self.rows = [row for row in reader if not row["error"]]

    def _rewrite(self) -> None:
        """Replace the file with header + rows (atomically) and reopen it for appending."""
        self.close()
        with atomic_path(self.path) as tmp:
            tmp.write_text(_csv_text(self.header, self.rows, with_header=True), encoding="utf-8")
        self._handle = self.path.open("a", newline="", encoding="utf-8")

    def _write(self, rows: list[dict[str, str]]) -> None:
        assert self._handle is not None, "ResultsTable used after close()"
        self._handle.write(_csv_text(self.header, rows, with_header=False))
        self._handle.flush()


def write_parquet(csv_path: Path, parquet_path: Path) -> None:
    """Convert results.csv to Parquet (column types inferred by pyarrow), atomically."""
    from pyarrow import csv as pa_csv
    from pyarrow import parquet

    table = pa_csv.read_csv(csv_path)
    with atomic_path(parquet_path) as tmp:
        parquet.write_table(table, tmp)


def parquet_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


def point_rows(
    inputs: dict[str, str], key: str, rows: list[dict[str, Any]], options: set[str]
) -> list[dict[str, str]]:
    """A finished point's rows: its inputs as `run_point` resolved them (as given where it reports
    none), its `key`, then each row's cache and metrics (the keys that are not simulate `options`)."""
    return [
        {column: cell(row[column]) if column in row else value for column, value in inputs.items()}
        | {"point": key, "cache": cell(row["cache"]), "error": ""}
        | {name: cell(value) for name, value in row.items() if name not in options and name != "cache"}
        for row in rows
    ]


def failure_row(inputs: dict[str, str], key: str, error: str) -> list[dict[str, str]]:
    """The one row of a point that failed: its inputs as given, its key and the error."""
    return [{**inputs, "point": key, "cache": "", "error": error}]


def _csv_text(header: list[str], rows: list[dict[str, str]], with_header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, restval="", lineterminator="\n")
    if with_header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
