"""Grid expansion: axes from the command line and the sweep file, merged, expanded in order, checked
against simulate's own parser before anything runs."""

from __future__ import annotations

from typing import Any

import pytest

from pagedkv.errors import UsageError
from pagedkv.sweep.config import SweepFile
from pagedkv.sweep.grid import Point, build_grid, check_points
from pagedkv.sweep.options import SimulateOptions

OPTIONS = SimulateOptions()


def grid(axes: list[str], fixed: dict[str, Any] | None = None, file: SweepFile | None = None) -> list[Point]:
    return build_grid(OPTIONS, file, axes, fixed or {}).points()


def test_cartesian_product_first_axis_slowest_fixed_options_first() -> None:
    points = grid(["rate=1,2", "block-size=8,16,32"], {"num_requests": 50})
    assert [p.index for p in points] == list(range(6))
    assert [p.values for p in points] == [
        (("rate", r), ("block_size", b)) for r in ("1", "2") for b in ("8", "16", "32")
    ]
    assert points[4].argv == ("--num-requests", "50", "--rate", "2", "--block-size", "16")
    assert points[4].label() == "rate=2 block_size=16"


def test_no_axis_is_one_point() -> None:
    assert grid([], {"seed": 4}) == [Point(0, (), ("--seed", "4"))]


def test_every_spelling_of_an_option_names_the_same_axis() -> None:
    for name in ("block-size", "block_size", "--block-size"):
        assert grid([f"{name}=8"])[0].argv == ("--block-size", "8")


def test_switch_and_two_value_options() -> None:
    switch = grid(["enable-prefix-caching=true,false"])
    assert [p.argv for p in switch] == [("--enable-prefix-caching",), ()]
    inputs = check_points(OPTIONS, switch)
    assert [i["enable_prefix_caching"] for i in inputs] == ["True", "False"]
    ranges = grid(["prompt-range=1 512,1 1024"])
    assert [p.argv for p in ranges] == [("--prompt-range", "1", "512"), ("--prompt-range", "1", "1024")]
    assert [i["prompt_range"] for i in check_points(OPTIONS, ranges)] == ["1 512", "1 1024"]


def test_inputs_hold_every_option_with_defaults() -> None:
    [inputs] = check_points(OPTIONS, grid(["rate=3"]))
    assert list(inputs) == OPTIONS.columns
    assert inputs["rate"] == "3.0" and inputs["seed"] == "0"
    assert inputs["block_size"] == ""  # as given: simulate picks it (16) when it runs
    assert inputs["trace"] == "" and "out" not in inputs and "json" not in inputs


def test_the_file_gives_axes_and_fixed_options_the_command_line_overrides() -> None:
    file = SweepFile(
        "s.toml",
        axes={"rate": [1, 2], "seed": [0, 1]},
        fixed={"num-requests": 40, "block-size": 8, "prompt-range": [1, 64]},
        plots=[],
    )
    points = grid(["block-size=16,32"], {"seed": 7}, file)
    assert [p.values for p in points] == [
        (("rate", r), ("block_size", b)) for r in ("1", "2") for b in ("16", "32")
    ]
    fixed = ("--num-requests", "40", "--prompt-range", "1", "64", "--seed", "7")
    assert points[0].argv == (*fixed, "--rate", "1", "--block-size", "16")


@pytest.mark.parametrize(
    ("axes", "fixed", "message"),
    [
        (["rate=1", "rate=2"], {}, r"^--grid rate=2: rate is given twice \(also --grid rate=1\)"),
        (["rate=1,2"], {"rate": 3.0}, r"^--rate: rate is an axis and fixed \(also --grid rate=1,2\)"),
        (["bogus=1"], {}, r"^--grid bogus=1: 'bogus' is not a `pagedkv simulate` option"),
        (["block-sise=8"], {}, r"did you mean block-size"),
        (["out=a.png"], {}, r"^--grid out=a.png: --out writes simulate's own files"),
        (["rate"], {}, r"^--grid 'rate': expected NAME=V1,V2"),
        (["rate="], {}, r"expected NAME=V1,V2"),
        (["rate=1,,2"], {}, r"expected NAME=V1,V2"),
        (
            ["enable-prefix-caching=maybe"],
            {},
            r"^--grid enable-prefix-caching=maybe: 'maybe' is not true or false",
        ),
    ],
)
def test_bad_grids_are_refused_naming_the_flag(axes: list[str], fixed: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        grid(axes, fixed)


def test_values_are_checked_by_simulate_before_anything_runs() -> None:
    with pytest.raises(
        UsageError,
        match=r"^point rate=2 block_size=x: argument --block-size: must be an integer >= 1, got 'x'",
    ):
        check_points(OPTIONS, grid(["rate=2", "block-size=16,x"]))
    with pytest.raises(
        UsageError,
        match=r"^point preemption_mode=later: argument --preemption-mode/--preemption: invalid choice",
    ):
        check_points(OPTIONS, grid(["preemption-mode=swap,later"]))


def test_two_points_that_are_the_same_simulation_are_refused() -> None:
    with pytest.raises(UsageError, match=r"^points rate=1 and rate=1.0 are the same simulation"):
        check_points(OPTIONS, grid(["rate=1,1.0"]))
