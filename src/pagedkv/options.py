"""Command-line option types and the parser class every `pagedkv` command uses.

Invariant: a bad value is refused while the command line is parsed, before any work, with one line
that names the flag and the value (``pagedkv simulate: error: argument --rate: must be a number > 0,
got '0'``) and exit status 2 — argparse's own default prints the whole usage block first, which
buries the one line that matters. Defaults are shown once in ``--help`` by `Formatter`, never typed
into help strings.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

Number = TypeVar("Number", int, float)


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line (and a pointer to ``--help``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows ``(default: X)`` after an option's help when it has a meaningful default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or default is None
            or default is False
            or default == argparse.SUPPRESS
            or default in ("", [], ())
            or not action.option_strings
        ):
            return text
        shown = " ".join(str(v) for v in default) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})"


def positive_int(text: str) -> int:
    return _bounded(int, text, lambda v: v >= 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
    return _bounded(int, text, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    return _bounded(float, text, lambda v: v > 0 and math.isfinite(v), "a number > 0")


def non_negative_float(text: str) -> float:
    return _bounded(float, text, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    return _bounded(float, text, lambda v: 0 <= v < 1, "a number in [0, 1)")


def probability(text: str) -> float:
    return _bounded(float, text, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def utilization(text: str) -> float:
    """A number in (0, 1]."""
    return _bounded(float, text, lambda v: 0 < v <= 1, "a number in (0, 1]")


def open_fraction(text: str) -> float:
    """A number in (0, 1), such as a relative tolerance."""
    return _bounded(float, text, lambda v: 0 < v < 1, "a number in (0, 1)")


def seed_list(text: str) -> tuple[int, ...]:
    """Seeds as ``0-9``, ``0,1,2`` or a mix (``0-4,10``), in the order given, each once."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            first, dash, last = part.partition("-")
            seeds += range(int(first), int(last) + 1) if dash else [int(first)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds such as 0-9 or 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"expected distinct seeds >= 0, at least one, got {text!r}")
    return tuple(seeds)


def _bounded(kind: Callable[[str], Number], text: str, ok: Callable[[Number], bool], what: str) -> Number:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value
