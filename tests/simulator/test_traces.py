"""Trace loaders: each format on a tiny fixture, every bad-input case, the length policies, real traces."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from pagedkv.errors import InvalidArgument, PagedKVError
from pagedkv.simulator.traces import (
    TraceError,
    TraceResult,
    detect_format,
    load_azure,
    load_lengths,
    load_mooncake,
    load_trace,
)

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def _lengths(result: TraceResult) -> list[tuple[int, int]]:
    return [(r.prompt_len, r.output_len) for r in result.requests]


# --- each loader on its fixture ---------------------------------------------------------------


def test_azure_fixture_crlf_fractions_and_midnight() -> None:
    path = FIXTURES / "azure_2023.csv"
    raw = path.read_bytes()
    assert raw.count(b"\r\n") == 4 and not raw.endswith(b"\n"), (
        "fixture must keep the real trace's CRLF layout"
    )

    result = load_azure(path)

    assert (result.fmt, result.timed, result.rows, result.path) == ("azure", True, 4, str(path))
    assert _lengths(result) == [(374, 44), (396, 109), (879, 1), (91, 1000)]
    # All 7 fractional digits are kept, and the day boundary (23:59 -> 00:00 next day) is crossed correctly.
    assert [r.arrival_time for r in result.requests] == pytest.approx(
        [0.0, 1.4799601, 1.4799601, 2.75], abs=1e-9
    )
    assert [r.request_id for r in result.requests] == [0, 1, 2, 3]
    assert all(r.prefix_hash_ids is None for r in result.requests)


def test_azure_timestamps_with_zone_suffix_and_no_fraction(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "zoned.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2024-05-10 10:00:00+00:00,10,1\n"
        "2024-05-10 11:00:00.5+01:00,10,1\n"
        "2024-05-10T10:00:02.25Z,10,1\n",
    )
    assert [r.arrival_time for r in load_azure(path).requests] == pytest.approx([0.0, 0.5, 2.25])


def test_mooncake_fixture_arrivals_and_prefix_blocks() -> None:
    result = load_mooncake(FIXTURES / "mooncake.jsonl")

    assert (result.fmt, result.timed, result.rows) == ("mooncake", True, 4)
    assert [r.arrival_time for r in result.requests] == [0.0, 0.25, 1.5, 1.75]
    assert _lengths(result) == [(1100, 20), (1024, 7), (513, 300), (12, 1)]
    assert [r.prefix_hash_ids for r in result.requests] == [(0, 1, 2), (0, 1), (0, 3), (4,)]
    assert all(r.prefix_block_tokens == 512 for r in result.requests)


def test_mooncake_without_hash_ids(tmp_path: Path) -> None:
    path = _write(tmp_path, "plain.jsonl", '{"timestamp": 5, "input_length": 9, "output_length": 2}\n')
    (request,) = load_mooncake(path).requests
    assert (request.arrival_time, request.prompt_len, request.prefix_hash_ids) == (0.0, 9, None)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("lengths_prefill_decode.csv", [(3772, 54), (2015, 156), (74, 918)]),
        ("lengths_input_output.csv", [(21, 518), (8, 66), (1400, 3)]),
    ],
)
def test_length_only_csvs(name: str, expected: list[tuple[int, int]]) -> None:
    result = load_lengths(FIXTURES / name)
    assert (result.fmt, result.timed) == ("lengths", False)
    assert _lengths(result) == expected
    assert [r.arrival_time for r in result.requests] == [0.0] * len(expected)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("azure_2023.csv", "azure"),
        ("mooncake.jsonl", "mooncake"),
        ("lengths_prefill_decode.csv", "lengths"),
        ("lengths_input_output.csv", "lengths"),
    ],
)
def test_load_trace_detects_the_format(name: str, fmt: str) -> None:
    path = FIXTURES / name
    assert detect_format(path) == fmt
    assert load_trace(path) == load_trace(path, fmt=fmt)
    assert load_trace(path).fmt == fmt


def test_columns_match_in_any_order_and_case(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "shuffled.csv", "generatedtokens,timestamp,CONTEXTTOKENS\n7,2023-11-16 18:17:03.1,30\n"
    )
    (request,) = load_trace(path).requests
    assert (request.prompt_len, request.output_len) == (30, 7)


def test_timed_rows_are_sorted_relative_to_the_earliest(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "unsorted.jsonl",
        '{"timestamp": 3000, "input_length": 1, "output_length": 1}\n'
        '{"timestamp": 1000, "input_length": 2, "output_length": 1}\n'
        '{"timestamp": 2000, "input_length": 3, "output_length": 1}\n',
    )
    result = load_trace(path)
    assert [(r.request_id, r.arrival_time, r.prompt_len) for r in result.requests] == [
        (0, 0.0, 2),
        (1, 1.0, 3),
        (2, 2.0, 1),
    ]


def test_limit_reads_only_the_first_rows(tmp_path: Path) -> None:
    path = _write(tmp_path, "limited.csv", "input_len,output_len\n1,1\n2,2\n3,3\nnot,a row\n")
    result = load_trace(path, limit=2)
    assert (_lengths(result), result.rows) == ([(1, 1), (2, 2)], 2)


# --- zero lengths and max_seq_len -------------------------------------------------------------


def test_zero_output_is_raised_to_one_and_zero_prompt_is_dropped(tmp_path: Path) -> None:
    path = _write(tmp_path, "zeros.csv", "input_len,output_len\n10,0\n0,5\n7,3\n0,0\n")
    result = load_trace(path)
    assert _lengths(result) == [(10, 1), (7, 3)]
    assert (result.rows, result.clamped_outputs, result.empty_prompts) == (4, 1, 2)
    assert (result.truncated, result.dropped) == (0, 0)


def test_truncate_keeps_the_output_and_cuts_the_prompt(tmp_path: Path) -> None:
    path = _write(tmp_path, "long.csv", "input_len,output_len\n90,10\n95,10\n30,200\n5,5\n")
    result = load_trace(path, max_seq_len=100, on_too_long="truncate")
    # 90+10 fits; 95+10 loses 5 prompt tokens; an output alone too long keeps one prompt token.
    assert _lengths(result) == [(90, 10), (90, 10), (1, 99), (5, 5)]
    assert (result.truncated, result.dropped, result.rows) == (2, 0, 4)
    assert all(r.total_len <= 100 for r in result.requests)


def test_drop_leaves_out_what_does_not_fit(tmp_path: Path) -> None:
    path = _write(tmp_path, "long.csv", "input_len,output_len\n90,10\n95,10\n30,200\n5,5\n")
    result = load_trace(path, max_seq_len=100, on_too_long="drop")
    assert _lengths(result) == [(90, 10), (5, 5)]
    assert [r.request_id for r in result.requests] == [0, 1]
    assert (result.truncated, result.dropped, result.rows) == (0, 2, 4)


def test_truncation_cuts_prefix_hash_ids_to_the_kept_prompt() -> None:
    result = load_trace(FIXTURES / "mooncake.jsonl", max_seq_len=600)
    assert _lengths(result) == [(580, 20), (593, 7), (300, 300), (12, 1)]
    assert [r.prefix_hash_ids for r in result.requests] == [(0, 1), (0, 1), (0,), (4,)]
    assert result.truncated == 3


def test_everything_dropped_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "huge.csv", "input_len,output_len\n900,10\n950,10\n0,4\n")
    with pytest.raises(TraceError) as caught:
        load_trace(path, max_seq_len=100, on_too_long="drop")
    message = str(caught.value)
    assert message.startswith(f"{path}: all 3 requests were left out: 1 with an empty prompt; 2 longer")
    assert "max_seq_len=100" in message


def test_only_empty_prompts_is_an_error_that_does_not_blame_max_seq_len(tmp_path: Path) -> None:
    path = _write(tmp_path, "empty_prompts.csv", "input_len,output_len\n0,10\n0,3\n")
    with pytest.raises(TraceError, match=r"all 2 requests were left out: 2 with an empty prompt$"):
        load_trace(path)


def test_describe_reports_every_count(tmp_path: Path) -> None:
    path = _write(tmp_path, "mixed.csv", "input_len,output_len\n10,0\n0,5\n500,5\n7,3\n")
    text = load_trace(path, max_seq_len=100).describe()
    assert (
        "3 requests" in text
        and "1 truncated" in text
        and "1 zero outputs" in text
        and "1 empty prompts" in text
    )


# --- bad input --------------------------------------------------------------------------------

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
GOOD_AZURE = "2023-11-16 18:17:03.9799600,4808,10\r\n"
GOOD_MOONCAKE = '{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [0]}\n'


@pytest.mark.parametrize(
    ("name", "text", "line", "fragment"),
    [
        (
            "a.csv",
            AZURE_HEADER + GOOD_AZURE + "2023-11-16 18:17:04.0,3180\r\n",
            3,
            "missing column GeneratedTokens",
        ),
        ("a.csv", AZURE_HEADER + "2023-11-16 18:17:04.0,3180,8,9\r\n", 2, "extra fields"),
        ("a.csv", AZURE_HEADER + GOOD_AZURE + "2023-11-16 18:17:04.0,31.5,8\r\n", 3, "ContextTokens='31.5'"),
        ("a.csv", AZURE_HEADER + "2023-11-16 18:17:04.0,,8\r\n", 2, "ContextTokens='' is not an integer"),
        ("a.csv", AZURE_HEADER + GOOD_AZURE + GOOD_AZURE + "2023-11-16 18:17:04.0,10,-3", 4, "negative"),
        ("a.csv", AZURE_HEADER + "16/11/2023 18:17:04,10,3\r\n", 2, "TIMESTAMP='16/11/2023 18:17:04'"),
        ("a.csv", AZURE_HEADER + "2023-13-16 18:17:04.5,10,3\r\n", 2, "is not a timestamp"),
        ("l.csv", "input_len,output_len\n1,2\n3\n", 3, "missing column output_len"),
        ("l.csv", "num_prefill_tokens,num_decode_tokens\n1,2\nx,2\n", 3, "num_prefill_tokens='x'"),
        ("l.csv", "num_prefill_tokens,num_decode_tokens\n1,-2\n", 2, "num_decode_tokens=-2 is a negative"),
        ("m.jsonl", GOOD_MOONCAKE + '{"timestamp": 1, "input_length": 10,\n', 2, "bad JSON"),
        (
            "m.jsonl",
            GOOD_MOONCAKE + '{"timestamp": 1, "input_length": 10}\n',
            2,
            "missing field 'output_length'",
        ),
        (
            "m.jsonl",
            GOOD_MOONCAKE + '{"timestamp": 1, "input_length": -1, "output_length": 2}',
            2,
            "negative",
        ),
        (
            "m.jsonl",
            '{"timestamp": 1, "input_length": 1.5, "output_length": 2}\n',
            1,
            "input_length=1.5 is not",
        ),
        ("m.jsonl", '{"timestamp": 1, "input_length": "7", "output_length": 2}\n', 1, "is not an integer"),
        ("m.jsonl", '{"timestamp": "noon", "input_length": 7, "output_length": 2}\n', 1, "timestamp='noon'"),
        ("m.jsonl", GOOD_MOONCAKE + "\n[1, 2, 3]\n", 3, "expected a JSON object, got list"),
        (
            "m.jsonl",
            '{"timestamp": 0, "input_length": 1025, "output_length": 2, "hash_ids": [0, 1]}',
            1,
            "spans",
        ),
        (
            "m.jsonl",
            '{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": ["a"]}',
            1,
            "hash_ids",
        ),
    ],
)
def test_malformed_rows_name_file_and_line(
    tmp_path: Path, name: str, text: str, line: int, fragment: str
) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("empty.csv", ""),
        ("header_only.csv", AZURE_HEADER.rstrip()),
        ("header_only_lengths.csv", "input_len,output_len\n\n"),
        ("blank.jsonl", "\n  \n"),
    ],
)
def test_empty_trace_is_an_error(tmp_path: Path, name: str, text: str) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(TraceError, match=r":1: empty trace") as caught:
        load_trace(path)
    assert str(path) in str(caught.value)


def test_unknown_format_names_the_header_it_saw(tmp_path: Path) -> None:
    path = _write(tmp_path, "mystery.csv", "time,prompt,completion\n1,2,3\n")
    with pytest.raises(
        TraceError, match=r"mystery\.csv:1: unknown trace format, header 'time,prompt,completion'"
    ):
        load_trace(path)


def test_explicit_format_that_does_not_match_the_header() -> None:
    with pytest.raises(TraceError, match=r":1: not a length-only trace: header 'TIMESTAMP,ContextTokens"):
        load_trace(FIXTURES / "azure_2023.csv", fmt="lengths")
    with pytest.raises(TraceError, match=r"mooncake\.jsonl:1: not an Azure trace"):
        load_azure(FIXTURES / "mooncake.jsonl")


def test_unreadable_files_raise_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"missing\.csv: cannot read the trace"):
        load_trace(tmp_path / "missing.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"input_len,output_len\n\xff\xfe,1\n")
    with pytest.raises(TraceError, match=r"binary\.csv: not a UTF-8 text file"):
        load_trace(binary, fmt="lengths")


@pytest.mark.parametrize(
    "options",
    [{"fmt": "parquet"}, {"on_too_long": "skip"}, {"max_seq_len": 1}, {"max_seq_len": 0}, {"limit": 0}],
)
def test_impossible_options_are_rejected(options: dict[str, object]) -> None:
    ((key, value),) = options.items()
    with pytest.raises(InvalidArgument, match=re.escape(f"{key}={value!r}")):
        load_trace(FIXTURES / "lengths_input_output.csv", **options)


def test_trace_error_is_a_pagedkv_error() -> None:
    assert issubclass(TraceError, PagedKVError)


# --- the real shared traces -------------------------------------------------------------------


def _mean(values: list[int]) -> float:
    return sum(values) / len(values)


# (file, format, rows and means from SOURCES.md, time span in seconds for timed traces)
REAL_TRACES = [
    ("AzureLLMInferenceTrace_code.csv", "azure", 8_819, 2_048, 27.9, 3_436),
    ("AzureLLMInferenceTrace_conv.csv", "azure", 19_366, 1_155, 211, 3_502),
    ("conversation_trace.jsonl", "mooncake", 12_031, 12_035, 343, 3_537),
    ("synthetic_trace.jsonl", "mooncake", 3_993, 15_325, 149, 1_022),
    ("sharegpt_8k_filtered_stats_llama2_tokenizer.csv", "lengths", 30_731, 2_340, 438.7, None),
    ("arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv", "lengths", 28_257, 2_588, 291, None),
    ("bwb_stats_llama2_tokenizer_filtered_v2.csv", "lengths", 33_768, 1_067, 1_613, None),
    ("sharegpt_opt_text_completion_length.csv", "lengths", 84_226, None, None, None),
]


@pytest.mark.parametrize(("name", "fmt", "rows", "prompt_mean", "output_mean", "span"), REAL_TRACES)
def test_real_trace_matches_its_published_statistics(
    name: str,
    fmt: str,
    rows: int,
    prompt_mean: float | None,
    output_mean: float | None,
    span: int | None,
    real_trace: Callable[[str], Path],
) -> None:
    result = load_trace(real_trace(name))

    assert (result.fmt, len(result.requests), result.rows) == (fmt, rows, rows)
    assert (result.truncated, result.dropped, result.clamped_outputs, result.empty_prompts) == (0, 0, 0, 0)
    if prompt_mean is not None:
        assert _mean([r.prompt_len for r in result.requests]) == pytest.approx(prompt_mean, abs=0.5)
        assert _mean([r.output_len for r in result.requests]) == pytest.approx(output_mean, abs=0.5)
    arrivals = [r.arrival_time for r in result.requests]
    assert result.timed == (span is not None)
    if span is not None:
        assert arrivals[0] == 0.0 and arrivals == sorted(arrivals)
        assert arrivals[-1] == pytest.approx(span, abs=1.0)


@pytest.mark.parametrize("name", ["conversation_trace.jsonl", "synthetic_trace.jsonl"])
def test_real_mooncake_has_one_hash_id_per_512_token_block(
    name: str, real_trace: Callable[[str], Path]
) -> None:
    requests = load_trace(real_trace(name)).requests
    assert all(len(r.prefix_hash_ids) == math.ceil(r.prompt_len / 512) for r in requests)
    if name == "conversation_trace.jsonl":
        assert all(r.prefix_hash_ids[0] == 0 for r in requests), "SOURCES.md: every request shares block 0"


def test_real_sharegpt_filtered_like_the_paper(real_trace: Callable[[str], Path]) -> None:
    result = load_trace(
        real_trace("sharegpt_opt_text_completion_length.csv"), max_seq_len=2048, on_too_long="drop"
    )
    assert (len(result.requests), result.dropped) == (79_731, 84_226 - 79_731)
    assert _mean([r.prompt_len for r in result.requests]) == pytest.approx(161.31, abs=0.005)
    assert _mean([r.output_len for r in result.requests]) == pytest.approx(337.99, abs=0.005)
