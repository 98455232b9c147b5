"""Every `SamplingParams` field is validated on creation; unknown fields are typed errors (no torch)."""

from __future__ import annotations

import dataclasses

import pytest

from pagedkv import PagedKVError, SamplingParams
from pagedkv.engine.errors import InvalidSamplingParams


def test_defaults_are_vllms() -> None:
    params = SamplingParams()
    assert (params.n, params.temperature, params.top_p, params.top_k, params.min_p) == (1, 1.0, 1.0, 0, 0.0)
    assert (params.max_tokens, params.min_tokens, params.seed, params.logprobs) == (16, 0, None, None)
    assert (params.stop, params.stop_token_ids, params.ignore_eos, params.repetition_penalty) == (
        (),
        (),
        False,
        1.0,
    )


def test_stop_accepts_one_string_or_a_list_and_is_immutable() -> None:
    assert SamplingParams(stop="###").stop == ("###",)
    assert SamplingParams(stop=["a", "bc"], stop_token_ids=[3, 4]).stop_token_ids == (3, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SamplingParams().n = 2  # type: ignore[misc]
    assert dataclasses.replace(SamplingParams(n=2), temperature=0).n == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"n": 0}, "n must be >= 1, got 0"),
        ({"n": 1.5}, "n must be an int, got 1.5"),
        ({"n": True}, "n must be an int, got True"),
        ({"temperature": -0.1}, "temperature must be >= 0"),
        ({"temperature": float("nan")}, "temperature must be >= 0 .*got nan"),
        ({"temperature": float("inf")}, "temperature must be >= 0 .*got inf"),
        ({"temperature": "0.5"}, "temperature must be a number"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.1}, r"top_p must be in \(0, 1\]"),
        ({"top_k": -2}, "top_k must be >= -1"),
        ({"top_k": 2.0}, "top_k must be an int"),
        ({"min_p": -0.1}, r"min_p must be in \[0, 1\]"),
        ({"min_p": 1.5}, r"min_p must be in \[0, 1\]"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"seed": 1.0}, "seed must be an int"),
        ({"max_tokens": 0}, "max_tokens must be >= 1"),
        ({"max_tokens": None}, "max_tokens must be an int"),
        ({"min_tokens": -1}, "min_tokens must be >= 0"),
        ({"min_tokens": 5, "max_tokens": 4}, "min_tokens=5 exceeds max_tokens=4"),
        ({"stop": ""}, "stop must be a non-empty string"),
        ({"stop": ["ok", 3]}, "stop must be a non-empty string or a list"),
        ({"stop": 3}, "stop must be"),
        ({"stop_token_ids": [1, -2]}, "stop_token_ids must be a list of token ids"),
        ({"stop_token_ids": [1.0]}, "stop_token_ids must be a list of token ids"),
        ({"stop_token_ids": 3}, "stop_token_ids must be a list"),
        ({"ignore_eos": 1}, "ignore_eos must be True or False"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be > 0"),
        ({"repetition_penalty": float("nan")}, "repetition_penalty must be > 0"),
        ({"logprobs": -1}, "logprobs must be >= 0"),
        ({"logprobs": 2.5}, "logprobs must be an int"),
        ({"skip_special_tokens": "yes"}, "skip_special_tokens must be True or False"),
    ],
)
def test_invalid_values_are_typed_errors(fields: dict, message: str) -> None:
    with pytest.raises(InvalidSamplingParams, match=message) as info:
        SamplingParams(**fields)
    assert isinstance(info.value, PagedKVError) and "\n" not in str(info.value)


def test_every_field_is_covered_by_a_check() -> None:
    checked = {
        name for fields, _ in test_invalid_values_are_typed_errors.pytestmark[0].args[1] for name in fields
    }
    assert checked == {f.name for f in dataclasses.fields(SamplingParams)}


def test_unknown_fields_are_typed_errors_with_a_suggestion() -> None:
    with pytest.raises(InvalidSamplingParams, match="no field 'max_new_tokens'; did you mean 'max_tokens'"):
        SamplingParams(max_new_tokens=5)
    with pytest.raises(InvalidSamplingParams, match="no field 'beam_width'; known: n, temperature"):
        SamplingParams(beam_width=4)
