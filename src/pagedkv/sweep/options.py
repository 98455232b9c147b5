"""The `pagedkv simulate` options a sweep sets: their names, their values as argv, each point's inputs.

Invariant: a point is the argv of one `pagedkv simulate` run (what `run_point` gets), and its *inputs*
are every option that argv resolves to, defaults included, rendered as the strings written to
results.csv. Two points with equal inputs are the same simulation, so `--resume` recognises a finished
point by these strings alone, and a changed default (a newer pagedkv) makes it run again.

Why parse with simulate's own parser: the sweep accepts exactly what `pagedkv simulate` accepts, today's
options and those added later (KV dtype, model, GPU) alike, and a bad value is refused before any point
runs with simulate's own message naming the flag.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
from typing import Any, NoReturn

from pagedkv.errors import UsageError
from pagedkv.simulator.cli import add_arguments, run_point

OUTPUT_ONLY = ("out", "no_plot", "json", "csv")  # simulate's own files: a sweep point writes none
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class SimulateOptions:
    """`pagedkv simulate`'s options, looked up by any spelling (``block-size``, ``block_size``,
    ``--block-size``) and rendered to argv."""

    def __init__(self) -> None:
        self._parser = _Parser(prog="pagedkv simulate", add_help=False)
        add_arguments(self._parser)
        self._actions = [a for a in self._parser._actions if a.option_strings and a.dest not in OUTPUT_ONLY]
        self._by_name: dict[str, argparse.Action] = {}
        for action in self._actions:
            for spelling in (*action.option_strings, action.dest):
                name = spelling.lstrip("-")
                self._by_name[name] = self._by_name[name.replace("-", "_")] = action

    @property
    def columns(self) -> list[str]:
        """The input columns of results.csv: every simulate option but its output files, in --help order."""
        return [action.dest for action in self._actions]

    @property
    def all_dests(self) -> set[str]:
        """Every name `run_point` may report as an option (metrics are the other keys of its rows)."""
        return {action.dest for action in self._parser._actions}

    def metrics(self) -> list[str]:
        """The metric columns `run_point` reports (the union over every cache simulate runs by default),
        from a two-request run: known before the sweep starts, so ``--plot`` can be checked up front."""
        rows = run_point(["--num-requests", "2"])
        names = (key for row in rows for key in row if key not in self.all_dests and key != "cache")
        return list(dict.fromkeys(names))

    def lookup(self, name: str, where: str) -> argparse.Action:
        """The option called `name`; `UsageError` (with the closest names) naming `where` if none is."""
        key = name.strip().lstrip("-")
        action = self._by_name.get(key) or self._by_name.get(key.replace("-", "_"))
        if action is not None:
            return action
        if key.replace("-", "_") in OUTPUT_ONLY:
            raise UsageError(f"{where}: --{key} writes simulate's own files; a sweep writes results.csv")
        close = difflib.get_close_matches(key, [a.option_strings[0].lstrip("-") for a in self._actions], 3)
        hint = f" (did you mean {', '.join(close)}?)" if close else "; see `pagedkv simulate --help`"
        raise UsageError(f"{where}: {name!r} is not a `pagedkv simulate` option{hint}")

    def to_argv(self, action: argparse.Action, value: Any, where: str) -> list[str]:
        """The argv that sets `action` to `value` (a TOML value, a command-line string or a parsed value)."""
        flag = action.option_strings[0]
        if action.nargs == 0:
            return _switch(action, _boolean(value, where))
        if action.nargs not in (None, "?"):
            parts = value.split() if isinstance(value, str) else list(value)
            return [flag, *map(str, parts)]
        if isinstance(value, (list, tuple, dict)):
            raise UsageError(f"{where}: {flag} takes one value, not {value!r}")
        return [flag, str(value)]

    def inputs(self, argv: list[str]) -> dict[str, str]:
        """Every input of the simulation `argv` describes, as results.csv writes it; `UsageError` if
        simulate would refuse it."""
        parsed = vars(self._parser.parse_args(argv))
        return {column: cell(parsed[column]) for column in self.columns}


def point_key(inputs: dict[str, str]) -> str:
    """A point's identity in results.csv: 16 hex digits of the SHA-256 of its inputs as given (every
    option, defaults included), so `--resume` recognises it whatever order its flags came in."""
    text = json.dumps(sorted(inputs.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cell(value: Any) -> str:
    """How results.csv writes a value: lists space-separated (as simulate's flags take them), None empty."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(cell(v) for v in value)
    return str(value)


def _switch(action: argparse.Action, on: bool) -> list[str]:
    if isinstance(action, argparse.BooleanOptionalAction):
        return [action.option_strings[0 if on else 1]]
    return [action.option_strings[0]] if on == action.const else []


def _boolean(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise UsageError(f"{where}: {value!r} is not true or false")
