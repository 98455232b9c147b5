"""The configurations a plan compares: ``--compare NAME=V1,V2`` axes over `pagedkv simulate`'s options.

Invariant: a `Configuration` is the argv of one `pagedkv simulate` run serving exactly one cache, with
everything but the arrival process fixed: the options given on the command line, then its own values
of the compared options. The configurations are every combination of the ``--compare`` axes in the
order given (the first varies slowest), no two are the same simulation, and each one's `Run` is built
(model, GPUs, KV blocks, trace, every request checked to fit) before any search starts, so a mistake
costs one line naming the flag, not a finished search.

Names and values are `pagedkv simulate`'s, looked up with the sweep's option table
(`pagedkv.sweep.options.SimulateOptions`: any spelling, ``true``/``false`` for switches, two-value
options space-separated), so every simulate option -- block size, cache, KV dtype, prefix caching,
GPU, tensor parallelism, scheduler, token budget -- can be compared as soon as simulate has it. The
arrival process is the planner's: ``rate`` is what it searches, seeds are ``--seeds``, the stream
length is ``--num-requests``, and simulate's ``--max-time`` would cut the runs it measures; each is
refused as a compared or fixed option with that remedy.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pagedkv.errors import UsageError
from pagedkv.simulator.cli import Run, build_run, parse_run_argv
from pagedkv.sweep.options import SimulateOptions, cell

PLANNER_OWNS = {
    "rate": "the planner searches the rate; remove it",
    "seed": "use --seeds (the planner pools several seeds at every rate)",
    "num_requests": "use --num-requests once: every configuration serves the same number of requests a seed",
    "max_time": "the planner runs every request to its end; remove it",
}
DEFAULT_CACHE = "paged"


@dataclass(frozen=True, slots=True)
class Configuration:
    """One compared configuration: ``values`` of the compared options, and its simulate argv: the options
    every configuration shares (``fixed``) followed by its own values (``own``)."""

    index: int
    values: tuple[tuple[str, str], ...]  # (option name, value as typed), in --compare order
    fixed: tuple[str, ...]
    own: tuple[str, ...]

    @property
    def argv(self) -> tuple[str, ...]:
        return self.fixed + self.own

    @property
    def synthetic(self) -> bool:
        """True when the requests are simulate's synthetic ones (no ``--trace``)."""
        return "--trace" not in self.argv

    @property
    def label(self) -> str:
        """``block_size=16 kv_cache_dtype=fp8``, or ``the deployment`` when nothing is compared."""
        return " ".join(f"{name}={value}" for name, value in self.values) or "the deployment"


def build_configurations(fixed: Mapping[str, Any], compare: Sequence[str]) -> list[Configuration]:
    """Every combination of the ``--compare`` axes on top of the `fixed` simulate options (by name, any
    spelling: ``block_size``, ``block-size``)."""
    options = SimulateOptions()
    axes = [_axis(options, text) for text in compare]
    names = [name for name, _ in axes]
    if len(set(names)) != len(names):
        repeated = next(name for name in names if names.count(name) > 1)
        raise UsageError(f"--compare {repeated}: compared twice; give all its values in one --compare")
    fixed_argv = _fixed_argv(options, fixed, set(names))
    configurations = []
    for index, combination in enumerate(itertools.product(*(values for _, values in axes))):
        own = [arg for _, value_argv in combination for arg in value_argv]
        values = tuple((name, label) for name, (label, _) in zip(names, combination, strict=True))
        configurations.append(Configuration(index, values, tuple(fixed_argv), tuple(own)))
    _refuse_duplicates(options, configurations)
    return configurations


def build_runs(configurations: list[Configuration], num_requests: int) -> list[Run]:
    """Each configuration's `Run` (seed 0's synthetic requests, or the whole trace), every option
    checked by simulate; `UsageError` names the configuration when there are several."""
    runs = []
    for configuration in configurations:
        argv = list(configuration.argv)
        if "--trace" not in argv:
            argv += ["--num-requests", str(num_requests)]
        try:
            runs.append(build_run(parse_run_argv(argv)))
        except UsageError as exc:
            if len(configurations) == 1:
                raise
            raise UsageError(f"configuration {configuration.label}: {exc}") from None
    return runs


def _axis(options: SimulateOptions, text: str) -> tuple[str, list[tuple[str, list[str]]]]:
    name, sep, listed = text.partition("=")
    values = [value.strip() for value in listed.split(",")]
    where = f"--compare {text}"
    if not sep or not name.strip() or "" in values:
        raise UsageError(
            f"{where}: expected NAME=V1,V2,... with a `pagedkv simulate` option and its values, e.g. "
            "--compare block-size=8,16,32"
        )
    action = options.lookup(name, where)
    if action.dest in PLANNER_OWNS:
        raise UsageError(f"{where}: {PLANNER_OWNS[action.dest]}")
    if len(set(values)) != len(values):
        raise UsageError(f"{where}: a value is listed twice")
    return action.dest, [(cell(value), options.to_argv(action, value, where)) for value in values]


def _fixed_argv(options: SimulateOptions, fixed: Mapping[str, Any], compared: set[str]) -> list[str]:
    argv: list[str] = []
    dests = set()
    for name, value in fixed.items():
        action = options.lookup(name, f"--{name.replace('_', '-')}")
        dest, flag = action.dest, action.option_strings[0]
        dests.add(dest)
        if dest in PLANNER_OWNS:
            raise UsageError(f"{flag}: {PLANNER_OWNS[dest]}")
        if dest in compared:
            raise UsageError(f"{flag}: also compared with --compare; keep one")
        if dest == "caches" and "," in str(value):
            kinds = str(value).replace(" ", "")
            raise UsageError(
                f"--caches {value}: a plan runs one cache per configuration; use --compare caches={kinds}"
            )
        argv.extend(options.to_argv(action, value, flag))
    if "caches" not in dests and "caches" not in compared:
        argv += ["--caches", DEFAULT_CACHE]
    return argv


def _refuse_duplicates(options: SimulateOptions, configurations: list[Configuration]) -> None:
    seen: dict[tuple[str, ...], Configuration] = {}
    for configuration in configurations:
        try:
            inputs = tuple(options.inputs(list(configuration.argv)).values())
        except UsageError as exc:
            raise UsageError(f"configuration {configuration.label}: {exc}") from None
        if inputs in seen:
            raise UsageError(
                f"--compare: configurations {seen[inputs].label} and {configuration.label} are the same "
                "simulation; remove the duplicate value"
            )
        seen[inputs] = configuration
