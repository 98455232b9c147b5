"""Trace loaders: real request traces turned into the same `Request` lists the synthetic workload makes.

Invariant: a loaded trace obeys the `workload` invariant (sorted by arrival, first at 0.0, ids equal to
list positions, every prompt and output >= 1 token, no request longer than `max_seq_len`), and every
row that was changed or left out on the way is counted in the `TraceResult`, never silently lost.

Formats (detected from the first line, or named with `fmt`):
  * ``azure``: Azure LLM inference trace 2023 CSV, ``TIMESTAMP,ContextTokens,GeneratedTokens``, wall-clock
    timestamps such as ``2023-11-16 18:17:03.9799600`` (7 fractional digits, which `datetime` cannot
    parse before Python 3.11, so the fraction is read by hand).
  * ``mooncake``: Mooncake JSONL, one object a line: ``timestamp`` (ms), ``input_length``,
    ``output_length`` and optionally ``hash_ids``, one id per 512-token prompt block (equal ids, equal
    content), which is what lets prefix caching be measured.
  * ``lengths``: CSVs of lengths only, ``num_prefill_tokens,num_decode_tokens[,...]`` (Vidur, Sarathi) or
    ``input_len,output_len`` (the PagedAttention paper's ShareGPT lengths). They carry no timestamps:
    `timed` is False, every arrival is 0.0, and callers re-time them with `with_poisson_arrivals`.

Degenerate rows: a zero output is raised to one token (a server's prefill step always samples the first
token, so the request still holds prompt + 1 slots) and counted in `clamped_outputs`; a zero prompt
is dropped (there is nothing to prefill or cache, and servers reject it) and counted in `empty_prompts`.
Negative lengths are malformed rows and raise `TraceError`.

Too long (`prompt + output > max_seq_len`): ``on_too_long="drop"`` leaves the request out (`dropped`);
``"truncate"`` (`truncated`) keeps the output and cuts the prompt from the end, so the leading prefix
blocks that prefix caching shares survive; when the output alone does not fit, the prompt keeps one
token and the output gets the rest.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any, NamedTuple

from pagedkv.errors import InvalidArgument, PagedKVError
from pagedkv.simulator.workload import PREFIX_BLOCK_TOKENS, Request

_REPO = Path(__file__).resolve().parents[3]  # a source checkout: <repo>/src/pagedkv/simulator

FORMATS = ("azure", "mooncake", "lengths")
ON_TOO_LONG = ("truncate", "drop")
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
LENGTH_COLUMNS = (("num_prefill_tokens", "num_decode_tokens"), ("input_len", "output_len"))

_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?:\.(\d+))?(?:(Z)|([+-])(\d\d):?(\d\d))?")
_EPOCH = datetime(1970, 1, 1)


class TraceError(PagedKVError):
    """A trace file that cannot be read; the message starts with ``path:line:`` of the offending row."""


def trace_folders() -> list[Path]:
    """Where the shared trace files are looked for, in order: ``$PAGEDKV_TRACES``; ``../shared/data/traces``
    beside a source checkout; ``./shared/data/traces`` and ``../shared/data/traces`` from the working
    directory. The one lookup of the package, its tests and its benchmarks."""
    folders = [Path(os.environ["PAGEDKV_TRACES"])] if os.environ.get("PAGEDKV_TRACES") else []
    folders += [_REPO.parent / "shared" / "data" / "traces", Path("shared/data/traces")]
    return [*folders, Path("../shared/data/traces")]


def find_trace(name: str) -> Path | None:
    """The first file called `name` in `trace_folders()`, or None."""
    return next((folder / name for folder in trace_folders() if (folder / name).is_file()), None)


class TraceResult(NamedTuple):
    """The requests of a trace, plus the count of every row the loader changed or left out."""

    requests: list[Request]
    fmt: str
    timed: bool  # False: arrivals are all 0.0, re-time them with workload.with_poisson_arrivals
    truncated: int  # requests cut to max_seq_len
    dropped: int  # requests left out because they exceed max_seq_len
    path: str
    rows: int = 0  # data rows read (after `limit`)
    clamped_outputs: int = 0  # zero outputs raised to one token
    empty_prompts: int = 0  # zero-prompt rows left out

    def describe(self) -> str:
        """One line for a run summary: what was loaded and what was changed on the way."""
        timing = "timestamps from the trace" if self.timed else "no timestamps"
        notes = [
            f"{count:,} {what}"
            for count, what in (
                (self.truncated, "truncated to max_seq_len"),
                (self.dropped, "dropped as longer than max_seq_len"),
                (self.clamped_outputs, "zero outputs raised to 1 token"),
                (self.empty_prompts, "empty prompts dropped"),
            )
            if count
        ]
        tail = f"; {', '.join(notes)}" if notes else ""
        return f"{len(self.requests):,} requests from {self.path} ({self.fmt}, {timing}){tail}"


class _Row(NamedTuple):
    seconds: float | None
    prompt_len: int
    output_len: int
    hash_ids: tuple[int, ...] | None


def load_trace(
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    max_seq_len: int | None = None,
    on_too_long: str = "truncate",
    limit: int | None = None,
) -> TraceResult:
    """Load any supported trace; `fmt=None` detects the format from the file's first line.

    `limit` reads only the first `limit` data rows (before the max_seq_len policy, so "truncate" and
    "drop" see the same rows); rows after it are not parsed, so they are not checked either.
    """
    if fmt is None:
        fmt = detect_format(path)
    elif fmt not in FORMATS:
        raise InvalidArgument(f"fmt={fmt!r} is not a trace format; use one of {', '.join(FORMATS)} or None")
    loader = {"azure": load_azure, "mooncake": load_mooncake, "lengths": load_lengths}[fmt]
    return loader(path, max_seq_len=max_seq_len, on_too_long=on_too_long, limit=limit)


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format whose header the file's first line is: "azure", "mooncake" or "lengths"."""
    with _reading(path) as handle:
        first = next((line for line in handle if line.strip()), "")
    if not first:
        raise TraceError(f"{path}:1: empty trace: the file has no header and no rows")
    if first.lstrip().startswith("{"):
        return "mooncake"
    names = {name.strip().lower() for name in next(csv.reader([first]), [])}
    if {name.lower() for name in AZURE_COLUMNS} <= names:
        return "azure"
    if any({a, b} <= names for a, b in LENGTH_COLUMNS):
        return "lengths"
    raise TraceError(
        f"{path}:1: unknown trace format, header {first.rstrip()!r}; expected an Azure CSV header "
        f"({','.join(AZURE_COLUMNS)}), a length-only CSV header "
        f"({' or '.join(','.join(pair) for pair in LENGTH_COLUMNS)}) or a Mooncake JSON object a line"
    )


def load_azure(
    path: str | os.PathLike[str],
    *,
    max_seq_len: int | None = None,
    on_too_long: str = "truncate",
    limit: int | None = None,
) -> TraceResult:
    """Azure LLM inference trace (2023 format): arrival times are seconds since the earliest row."""

    def rows(handle: IO[str]) -> Iterator[_Row]:
        origin = None
        _, records = _csv_records(path, handle, (AZURE_COLUMNS,), "an Azure")
        for line, (stamp, context, generated) in records:
            whole, fraction = _azure_seconds(path, line, stamp)
            origin = whole if origin is None else origin
            prompt = _count(path, line, "ContextTokens", context)
            output = _count(path, line, "GeneratedTokens", generated)
            yield _Row(whole - origin + fraction, prompt, output, None)

    return _load(path, "azure", True, rows, max_seq_len, on_too_long, limit)


def load_mooncake(
    path: str | os.PathLike[str],
    *,
    max_seq_len: int | None = None,
    on_too_long: str = "truncate",
    limit: int | None = None,
) -> TraceResult:
    """Mooncake JSONL trace: arrival times are (timestamp - earliest timestamp) / 1000 seconds."""

    def rows(handle: IO[str]) -> Iterator[_Row]:
        for line, text in enumerate(handle, start=1):
            if text.strip():
                yield _mooncake_row(path, line, text)

    return _load(path, "mooncake", True, rows, max_seq_len, on_too_long, limit)


def load_lengths(
    path: str | os.PathLike[str],
    *,
    max_seq_len: int | None = None,
    on_too_long: str = "truncate",
    limit: int | None = None,
) -> TraceResult:
    """Length-only CSV; extra columns (num_total_tokens, pd_ratio) are ignored. All arrivals are 0.0."""

    def rows(handle: IO[str]) -> Iterator[_Row]:
        (prompt_column, output_column), records = _csv_records(path, handle, LENGTH_COLUMNS, "a length-only")
        for line, (prompt, output) in records:
            prompt_len = _count(path, line, prompt_column, prompt)
            yield _Row(None, prompt_len, _count(path, line, output_column, output), None)

    return _load(path, "lengths", False, rows, max_seq_len, on_too_long, limit)


def _load(
    path: str | os.PathLike[str],
    fmt: str,
    timed: bool,
    parse: Callable[[IO[str]], Iterator[_Row]],
    max_seq_len: int | None,
    on_too_long: str,
    limit: int | None,
) -> TraceResult:
    """Read the rows, apply the zero-length and max_seq_len policies, then order and number them."""
    _check_options(max_seq_len, on_too_long, limit)
    kept: list[_Row] = []
    rows = truncated = dropped = clamped = empty = 0
    with _reading(path) as handle:
        for row in itertools.islice(parse(handle), limit):
            rows += 1
            if row.prompt_len == 0:
                empty += 1
                continue
            if row.output_len == 0:
                clamped += 1
                row = row._replace(output_len=1)
            if max_seq_len is not None and row.prompt_len + row.output_len > max_seq_len:
                if on_too_long == "drop":
                    dropped += 1
                    continue
                truncated += 1
                row = _truncate(row, max_seq_len)
            kept.append(row)
    if not rows:
        raise TraceError(f"{path}:1: empty trace: the file has no request rows")
    if not kept:
        raise TraceError(
            f"{path}: all {rows:,} requests were left out: {_why_none_left(empty, dropped, max_seq_len)}"
        )
    return TraceResult(
        _requests(kept, timed), fmt, timed, truncated, dropped, str(path), rows, clamped, empty
    )


def _why_none_left(empty: int, dropped: int, max_seq_len: int | None) -> str:
    reasons = []
    if empty:
        reasons.append(f"{empty:,} with an empty prompt")
    if dropped:
        reasons.append(
            f"{dropped:,} longer than max_seq_len={max_seq_len} (raise it or use on_too_long='truncate')"
        )
    return "; ".join(reasons)


def _requests(rows: list[_Row], timed: bool) -> list[Request]:
    """Timed rows in arrival order (stable, so equal timestamps keep file order), relative to the first."""
    seconds = [row.seconds or 0.0 for row in rows]  # every row of a timed trace has its timestamp
    start = 0.0
    if timed:
        order = sorted(range(len(rows)), key=seconds.__getitem__)
        rows, seconds = [rows[i] for i in order], [seconds[i] for i in order]
        start = seconds[0]
    return [
        Request(
            request_id=i,
            arrival_time=seconds[i] - start if timed else 0.0,
            prompt_len=row.prompt_len,
            output_len=row.output_len,
            prefix_hash_ids=row.hash_ids,
        )
        for i, row in enumerate(rows)
    ]


def _truncate(row: _Row, max_seq_len: int) -> _Row:
    """Keep the output (the decode phase is what the caches differ on), cut the prompt's tail."""
    output = min(row.output_len, max_seq_len - 1)
    prompt = max_seq_len - output
    hash_ids = row.hash_ids[: _blocks(prompt)] if row.hash_ids is not None else None
    return row._replace(prompt_len=prompt, output_len=output, hash_ids=hash_ids)


def _check_options(max_seq_len: int | None, on_too_long: str, limit: int | None) -> None:
    if on_too_long not in ON_TOO_LONG:
        raise InvalidArgument(f"on_too_long={on_too_long!r} must be one of {', '.join(ON_TOO_LONG)}")
    if max_seq_len is not None and max_seq_len < 2:
        raise InvalidArgument(
            f"max_seq_len={max_seq_len} cannot hold any request: each needs at least one prompt token "
            "and one output token; use max_seq_len >= 2 or None for no limit"
        )
    if limit is not None and limit < 1:
        raise InvalidArgument(f"limit={limit} must be >= 1 (or None to read the whole trace)")


@contextmanager
def _reading(path: str | os.PathLike[str]) -> Iterator[IO[str]]:
    """Open a trace as text, turning I/O and decoding failures into TraceError (no tracebacks in the CLI)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            yield handle
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the trace: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not a UTF-8 text file (bad byte at offset {exc.start})") from exc


def _csv_records(
    path: str | os.PathLike[str],
    handle: IO[str],
    variants: tuple[tuple[str, ...], ...],
    kind: str,
) -> tuple[tuple[str, ...], Iterator[tuple[int, list[str]]]]:
    """The first column set in `variants` that the header has, and (line, its values) for each data row.

    Column names match case-insensitively and in any order; blank lines are skipped.
    """
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        raise TraceError(f"{path}:1: empty trace: the file has no header and no rows")
    index = {name.strip().lower(): i for i, name in enumerate(header)}
    wanted = next((cols for cols in variants if all(c.lower() in index for c in cols)), None)
    if wanted is None:
        expected = " or ".join(",".join(cols) for cols in variants)
        raise TraceError(
            f"{path}:1: not {kind} trace: header {','.join(header)!r} lacks the columns {expected}"
        )
    return wanted, _csv_values(path, reader, header, [index[c.lower()] for c in wanted])


def _csv_values(
    path: str | os.PathLike[str], reader: Any, header: list[str], columns: list[int]
) -> Iterator[tuple[int, list[str]]]:
    """Rows of a `csv.reader` (whose `line_num` names the line) as (line, the wanted fields)."""
    width = len(header)
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != width:
            what = f"missing column {', '.join(header[len(row) :])}" if len(row) < width else "extra fields"
            raise TraceError(
                f"{path}:{reader.line_num}: {what}: the row has {len(row)} fields, the header has {width}"
            )
        yield reader.line_num, [row[i] for i in columns]


def _count(path: str | os.PathLike[str], line: int, column: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise TraceError(f"{path}:{line}: {column}={text!r} is not an integer token count") from None
    if value < 0:
        raise TraceError(f"{path}:{line}: {column}={value} is a negative length; token counts are >= 0")
    return value


def _azure_seconds(path: str | os.PathLike[str], line: int, text: str) -> tuple[int, float]:
    """(whole seconds since 1970 UTC, fraction) of an Azure timestamp, kept apart so no precision is lost.

    Any number of fractional digits is accepted, and an optional zone suffix (Z, +HH:MM); naive
    times are taken as UTC. A regex instead of `datetime.fromisoformat` alone, because Python 3.10
    rejects the 7-digit fractions the Azure trace uses.
    """
    match = _TIMESTAMP.fullmatch(text.strip())
    try:
        if match is None:
            raise ValueError
        stamp = datetime.fromisoformat(match[1])
    except ValueError:
        raise TraceError(
            f"{path}:{line}: TIMESTAMP={text!r} is not a timestamp like 2023-11-16 18:17:03.9799600"
        ) from None
    since_epoch = stamp - _EPOCH
    offset = (
        0
        if match[4] is None
        else (1 if match[4] == "+" else -1) * (int(match[5]) * 3600 + int(match[6]) * 60)
    )
    fraction = float("0." + match[2]) if match[2] else 0.0
    return since_epoch.days * 86400 + since_epoch.seconds - offset, fraction


def _mooncake_row(path: str | os.PathLike[str], line: int, text: str) -> _Row:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path}:{line}: bad JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(record, dict):
        raise TraceError(f"{path}:{line}: expected a JSON object, got {type(record).__name__}")
    for key in ("timestamp", "input_length", "output_length"):
        if key not in record:
            raise TraceError(f"{path}:{line}: missing field {key!r}")
    stamp = record["timestamp"]
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not math.isfinite(stamp):
        raise TraceError(f"{path}:{line}: timestamp={stamp!r} is not a number of milliseconds")
    prompt = _json_count(path, line, "input_length", record["input_length"])
    output = _json_count(path, line, "output_length", record["output_length"])
    hash_ids = _hash_ids(path, line, record.get("hash_ids"), prompt)
    return _Row(stamp / 1000.0, prompt, output, hash_ids)


def _json_count(path: str | os.PathLike[str], line: int, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TraceError(f"{path}:{line}: {key}={value!r} is not an integer token count")
    if value < 0:
        raise TraceError(f"{path}:{line}: {key}={value} is a negative length; token counts are >= 0")
    return value


def _hash_ids(path: str | os.PathLike[str], line: int, value: object, prompt: int) -> tuple[int, ...] | None:
    """The prompt's prefix block ids; there must be exactly one per started 512-token block."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise TraceError(f"{path}:{line}: hash_ids must be a list of integers, got {value!r:.60}")
    if len(value) != _blocks(prompt):
        raise TraceError(
            f"{path}:{line}: hash_ids has {len(value)} ids but input_length={prompt} spans "
            f"ceil({prompt}/{PREFIX_BLOCK_TOKENS}) = {_blocks(prompt)} blocks of {PREFIX_BLOCK_TOKENS} tokens"
        )
    return tuple(value)


def _blocks(tokens: int) -> int:
    return -(-tokens // PREFIX_BLOCK_TOKENS)
