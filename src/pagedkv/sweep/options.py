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
PLAN_ONLY = ("slo", "seeds", "tolerance")  # the planner's own options: axes or fixed with ``--plan`` only
DEFAULT_PLOT_METRICS = ("tokens_per_s", "e2e_s_mean", "batch_mean", "token_util_of_held")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class RaisingParser(argparse.ArgumentParser):
    """Raises `UsageError` (the message names the flag) instead of printing and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class SimulateOptions:
    """`pagedkv simulate`'s options, looked up by any spelling (``block-size``, ``block_size``,
    ``--block-size``) and rendered to argv.

    A subclass whose points are another command's (`pagedkv.sweep.plans.PlanOptions`) adds its options
    (`_add_arguments`), refuses some of simulate's with a remedy (`refused`) and names its own metrics."""

    command = "`pagedkv simulate`"
    default_caches = "simulate's default"  # the caches a point without --caches runs, for the header
    plot_metrics: tuple[str, ...] = DEFAULT_PLOT_METRICS  # the metrics of the default plots

    def __init__(self) -> None:
        self._parser = RaisingParser(prog="pagedkv simulate", add_help=False)
        add_arguments(self._parser)
        self._add_arguments(self._parser)
        refused = self.refused()
        self._actions = [
            a
            for a in self._parser._actions
            if a.option_strings and a.dest not in OUTPUT_ONLY and a.dest not in refused
        ]
        self._by_name: dict[str, argparse.Action] = {}
        for action in self._actions:
            for spelling in (*action.option_strings, action.dest):
                name = spelling.lstrip("-")
                self._by_name[name] = self._by_name[name.replace("-", "_")] = action

    def _add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Options beyond simulate's that a point's argv may hold (none here)."""

    def refused(self) -> dict[str, str]:
        """Option dest -> why it cannot be an axis or fixed here, with the remedy."""
        return {dest: "a planner option: add --plan (every point then a plan)" for dest in PLAN_ONLY}

    @property
    def columns(self) -> list[str]:
        """The input columns of results.csv: every option a point takes but output files, in --help order."""
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
        dest = key.replace("-", "_")
        if dest in OUTPUT_ONLY:
            raise UsageError(f"{where}: --{key} writes simulate's own files; a sweep writes results.csv")
        if dest in self.refused():
            raise UsageError(f"{where}: {self.refused()[dest]}")
        close = difflib.get_close_matches(key, [a.option_strings[0].lstrip("-") for a in self._actions], 3)
        hint = f" (did you mean {', '.join(close)}?)" if close else "; see `pagedkv simulate --help`"
        raise UsageError(f"{where}: {name!r} is not a {self.command} option{hint}")

    def to_argv(self, action: argparse.Action, value: Any, where: str) -> list[str]:
        """The argv that sets `action` to `value` (a TOML value, a command-line string or a parsed value)."""
        flag = action.option_strings[0]
        if action.nargs == 0:
            return _switch(action, _boolean(value, where))
        if isinstance(action, argparse._AppendAction):  # --slo: a list, or one text with ';' between values
            parts = value.split(";") if isinstance(value, str) else list(value)
            return [arg for part in parts for arg in (flag, str(part).strip())]
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
