"""`pagedkv simulate` / `python simulate.py`: the plot, the JSON, the table, and every bad input."""

from __future__ import annotations

import contextlib
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pagedkv.cli import main

REPO = Path(__file__).resolve().parents[2]
SMALL = ["simulate", "--num-requests", "60", "--prompt-range", "20", "600", "--output-range", "5", "200"]


def test_writes_plot_json_csv_and_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, metrics, table = tmp_path / "frag.png", tmp_path / "metrics.json", tmp_path / "requests.csv"
    assert main([*SMALL, "--out", str(out), "--json", str(metrics), "--csv", str(table)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    text = capsys.readouterr().out
    assert "25,600 KV token slots for every cache" in text  # 32 rows x (600 + 200)
    for label in (
        "token states",
        "internal fragmentation",
        "free (no demand)",
        "TTFT p50 / p90 / p99 (s)",
        "orca-pow2",
    ):
        assert label in text
    assert f"wrote {out}" in text and f"wrote {metrics}" in text and f"wrote {table}" in text
    assert "scheduler: vLLM V1 order, max_num_seqs no limit, no token budget" in text
    document = json.loads(metrics.read_text())
    assert list(document["caches"]) == ["naive", "orca-max", "orca-pow2", "orca-oracle", "paged"]
    paged = document["caches"]["paged"]
    assert paged["capacity_slots"] == document["capacity_slots"] == 25_600
    assert len(paged["series"]["held"]) == paged["summary"]["steps"]
    assert paged["summary"]["requests_finished"] == 60
    assert len(paged["requests"]["latency_s"]) == 60
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 5 * 60 and rows[0]["cache"] == "naive" and rows[-1]["cache"] == "paged"
    paged_rows = [row for row in rows if row["cache"] == "paged"]
    assert [float(row["e2e_s"]) for row in paged_rows] == pytest.approx(
        paged["requests"]["latency_s"], abs=1e-5
    )
    e2e = sorted(float(row["e2e_s"]) for row in paged_rows)
    assert paged["summary"]["e2e_s_p50"] == pytest.approx((e2e[29] + e2e[30]) / 2, abs=1e-5)
    # the table prints p50 / p90 / p99 of every latency, the JSON's numbers
    (ttft_row,) = [line for line in text.splitlines() if line.startswith("TTFT p50 / p90 / p99 (s)")]
    quantiles = [paged["summary"][f"ttft_s_{q}"] for q in ("p50", "p90", "p99")]
    assert ttft_row.endswith(" / ".join(f"{v:,.2f}" for v in quantiles))
    assert paged["summary"]["ttft_s_p50"] < paged["summary"]["ttft_s_p90"] < paged["summary"]["ttft_s_p99"]


def test_trace_with_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fixture = Path(__file__).parent / "fixtures" / "mooncake.jsonl"
    args = ["simulate", "--trace", str(fixture), "--caches", "naive,paged", "--prefix-caching", "--no-plot"]
    assert main([*args, "--preemption", "swap", "-n", "2", "--max-seq-len", "1024", "--rows", "4"]) == 0
    text = capsys.readouterr().out
    assert "(mooncake, timestamps from the trace); 2 truncated to max_seq_len" in text
    assert "parallel sampling, n = 2" in text
    assert "note:" not in text  # Mooncake prompts carry prefix ids: prefix caching applies


def test_a_token_budget_and_the_v0_scheduler_from_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([*SMALL, "--no-plot", "--caches", "paged", "--max-num-batched-tokens", "512"]) == 0
    text = capsys.readouterr().out
    assert "vLLM V1, max_num_seqs 256, 512 tokens a step: decodes first, then prompt chunks" in text
    assert (
        main(
            [*SMALL, "--no-plot", "--caches", "paged", "--max-num-batched-tokens", "800", "--scheduler", "v0"]
        )
        == 0
    )
    assert "separate prefill steps (decodes wait), whole prompts" in capsys.readouterr().out


def test_prefix_caching_on_a_workload_without_prefix_ids_is_noted(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SMALL, "--no-plot", "--caches", "paged", "--enable-prefix-caching"]) == 0
    assert "note:      --enable-prefix-caching: this workload says nothing of shared prefixes" in (
        capsys.readouterr().out
    )


BAD_INPUTS = [
    (["--rate", "0"], "argument --rate: must be a number > 0, got '0'"),
    (["--rate", "-3"], "argument --rate: must be a number > 0, got '-3'"),
    (["--num-requests", "0"], "argument --num-requests: must be an integer >= 1, got '0'"),
    (["--step-time", "0"], "argument --step-time: must be a number > 0, got '0'"),
    (["--max-seq-len", "0"], "argument --max-model-len/--max-seq-len: must be an integer >= 1"),
    (["--max-model-len", "1"], "--max-model-len 1: a sequence needs at least one prompt and one output"),
    (["--kv-slots", "100"], "--kv-slots 100: smaller than one naive row of --max-model-len 800 slots"),
    (["--caches", "paged", "--kv-slots", "500"], "the pool is smaller than one request"),
    (["--caches", ""], "--caches '': name at least one of naive, orca-max"),
    (["--caches", "naive,bogus"], "--caches: unknown cache 'bogus'"),
    (["--n", "0"], "argument -n/--n: must be an integer >= 1, got '0'"),
    (["--n", "2", "--beam-width", "2"], "--n 2 and --beam-width 2: choose sampling or beam search"),
    (["--prompt-range", "50", "10"], "--prompt-range 50 10: LO must not exceed HI"),
    (["--json", "/nonexistent-dir/x.json"], "--json /nonexistent-dir/x.json: the folder /nonexistent-dir"),
    (["--trace", "/nonexistent-dir/trace.csv"], "--prompt-range sets synthetic lengths; with --trace"),
    (["--window", "5000", "6000"], "--window 5000 6000: contains no step of the naive run"),
    (["--window", "10", "5"], "--window 10 5: START must be before END"),
    (["--swap-slots", "100"], "--swap-slots sizes the swap pool of --preemption-mode swap"),
    (["--format", "azure"], "--format applies to --trace files"),
    (["--caches", "naive", "--block-size", "32"], "--block-size applies to the paged cache"),
    (["--beam-prune-prob", "0.2"], "--beam-prune-prob applies to beam search"),
    (["--max-num-batched-tokens", "64", "--max-num-seqs", "128"], "must be >= --max-num-seqs 128"),
    (["--scheduler", "v0", "--enable-chunked-prefill"], "the v0 scheduler never chunks prompts"),
    (
        ["--max-num-batched-tokens", "256", "--no-enable-chunked-prefill"],
        "--max-num-batched-tokens 256: request 13 may need 751 tokens prefilled in one step",
    ),
    (["--num-blocks", str(10**12)], "--num-blocks 1,000,000,000,000: a paged pool of"),
    (["--rows", str(10**8)], "--rows 100,000,000: a paged pool of 5,000,000,000 blocks would need about"),
    (["--prompt-range", "1", "1000000000"], "would need about"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_exits_2_with_one_line_naming_the_flag(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with contextlib.suppress(SystemExit):  # argparse's own checks exit 2 from inside parsing
        assert main([*SMALL, "--no-plot", *args]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("pagedkv simulate: error:") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if "contains no step" not in message:
        assert "workload:" not in captured.out  # refused before any work


@pytest.mark.parametrize(
    ("flag", "path", "message"),
    [
        ("--out", "{tmp}", ": is a folder; give a file name inside it"),
        ("--out", "{tmp}/plot.txt", "unsupported file type '.txt'; use one of .png, .svg, .pdf"),
        ("--out", "{tmp}/missing/plot.png", "does not exist; create it first"),
        ("--csv", "{tmp}/missing/r.csv", "does not exist; create it first"),
    ],
)
def test_output_paths_are_checked_before_the_run(
    tmp_path: Path, flag: str, path: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*SMALL, flag, path.format(tmp=tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"pagedkv simulate: error: {flag} ") and message in captured.err
    assert captured.out == ""  # nothing simulated


def test_ctrl_c_while_writing_keeps_the_old_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    out = tmp_path / "frag.png"
    out.write_bytes(b"the good plot")

    def interrupted_save(self: Figure, path: object, **kwargs: object) -> None:
        Path(str(path)).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", interrupted_save)
    assert main([*SMALL, "--caches", "paged", "--out", str(out)]) == 130
    assert capsys.readouterr().err.endswith("interrupted\n")
    assert out.read_bytes() == b"the good plot"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frag.png"]


def test_without_matplotlib_the_plot_is_refused_before_simulating() -> None:
    code = (
        "import sys\n"
        "sys.modules['matplotlib'] = None\n"
        "from pagedkv.cli import main\n"
        "sys.exit(main(['simulate', '--num-requests', '20']))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 2
    assert "the plot needs matplotlib, which is not installed" in run.stderr and run.stdout == ""


def test_help_shows_each_default_once(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: fragmentation.png)" in text and text.count("(default 0.05;") == 1
    assert "(default: None)" not in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", ":1: empty trace"),
        ("input_len,output_len\n", ":1: empty trace: the file has no request rows"),
        ("input_len,output_len\n10,5\n12,x\n", ":3:"),
        ("input_len,output_len\n10,-5\n", ":2:"),
    ],
)
def test_bad_trace_exits_2_naming_file_and_line(
    tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(content)
    assert main(["simulate", "--trace", str(trace), "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert f"{trace}{message}" in err and "Traceback" not in err


def test_simulate_py_is_the_same_command_and_never_shows_a_traceback(tmp_path: Path) -> None:
    bad = subprocess.run(
        [sys.executable, str(REPO / "simulate.py"), "--rate", "0"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert "argument --rate: must be a number > 0" in bad.stderr and "Traceback" not in bad.stderr
    usage = subprocess.run(
        [sys.executable, str(REPO / "simulate.py"), "--block-size", "many"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert usage.returncode == 2 and "got 'many'" in usage.stderr and "Traceback" not in usage.stderr
    good = subprocess.run(
        [sys.executable, str(REPO / "simulate.py"), *SMALL[1:], "--caches", "naive,paged", "--no-plot"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert good.returncode == 0, good.stderr
    assert "tokens / slots held" in good.stdout and good.stderr == ""  # no progress bar off a terminal


def test_simulating_imports_neither_torch_nor_matplotlib() -> None:
    code = (
        "import sys\n"
        "from pagedkv.cli import main\n"
        "assert main(['simulate', '--num-requests', '20', '--no-plot', '--prompt-range', '5', '50']) == 0\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'matplotlib', 'numpy'}))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]"


def test_run_point_gives_one_flat_row_per_cache_with_inputs_and_metrics() -> None:
    from pagedkv.simulator.cli import run_point

    rows = run_point(["--num-requests", "40", "--caches", "naive,paged", "--rate", "3", "--seed", "2"])
    assert [row["cache"] for row in rows] == ["naive", "paged"]
    for row in rows:
        assert row["rate"] == 3.0 and row["seed"] == 2 and row["num_requests"] == 40
        assert row["prompt_range"] == "200 4000"
        assert row["requests_finished"] == 40
        assert all(not isinstance(value, (list, tuple, dict)) for value in row.values())
    assert rows[1]["batch_mean"] > rows[0]["batch_mean"]  # paged runs a larger batch in equal memory


def test_run_point_raises_usage_errors_instead_of_exiting() -> None:
    from pagedkv.errors import UsageError
    from pagedkv.simulator.cli import run_point

    with pytest.raises(UsageError, match="--bogus"):
        run_point(["--bogus"])


# --- a model on GPUs, in vLLM's units ------------------------------------------------------------

MODEL_RUN = ["simulate", "--model", "Llama-3.1-8B", "--num-requests", "40", "--no-plot"]


def test_a_model_on_a_gpu_gets_vllms_block_count_and_roofline(capsys: pytest.CaptureFixture[str]) -> None:
    from pagedkv.simulator.deployment import Deployment
    from pagedkv.simulator.gpu import GpuSpec
    from pagedkv.simulator.model_config import ModelConfig

    assert main([*MODEL_RUN, "--gpu", "A100-80GB"]) == 0
    text = capsys.readouterr().out
    expected = Deployment(ModelConfig.from_pretrained("Llama-3.1-8B"), GpuSpec.from_name("A100-80GB"))
    # 128 KiB a token (32 layers x 8 KV heads x 128 x 2 x 2 B): 2 MiB a block of 16
    assert expected.memory_terms().bytes_per_block == 32 * 8 * 128 * 2 * 2 * 16
    assert f"{expected.usable_blocks * 16:,} KV token slots for every cache: paged" in text
    for line in expected.memory_terms().format().splitlines():
        assert line in text  # every term of the sum is printed
    assert "vLLM V1, max_num_seqs 256, 2,048 tokens a step" in text  # vllm serve's A100 defaults
    assert "step = host 10.0 ms + max(weights" in text
    assert "TPOT p50 / p90 / p99 (ms)" in text


def test_fp8_kv_doubles_the_blocks_and_a_given_budget_is_kept(capsys: pytest.CaptureFixture[str]) -> None:
    def slots(*extra: str) -> int:
        assert main([*MODEL_RUN, *extra]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("memory:"))
        return int(line.split()[1].replace(",", ""))

    auto, fp8 = slots(), slots("--kv-cache-dtype", "fp8")
    assert fp8 // 16 in (2 * (auto // 16 + 1) - 1, 2 * (auto // 16 + 1))  # usable = blocks - 1
    assert main([*MODEL_RUN, "--max-num-batched-tokens", "4096", "--max-num-seqs", "128"]) == 0
    assert "max_num_seqs 128, 4,096 tokens a step" in capsys.readouterr().out


def test_a_gpu_given_by_its_numbers_and_own_step_coefficients(capsys: pytest.CaptureFixture[str]) -> None:
    numbers = ["--gpu-memory-gib", "48", "--gpu-hbm-gbps", "864", "--gpu-tflops", "181"]
    assert main([*MODEL_RUN, *numbers, "--step-time", "0.02"]) == 0
    text = capsys.readouterr().out
    assert "custom GPU" in text and "engine:    20 ms per engine step" in text


def test_a_gpu_given_by_its_numbers_splits_a_model_over_its_given_link(
    capsys: pytest.CaptureFixture[str],
) -> None:
    numbers = ["--gpu-memory-gib", "48", "--gpu-hbm-gbps", "864", "--gpu-tflops", "181", "-tp", "2"]
    assert main([*MODEL_RUN, *numbers, "--gpu-link-gbps", "32"]) == 0
    text = capsys.readouterr().out
    assert "over 80% of 32 GB/s each way (given on the command line)" in text  # the all-reduce term


def test_swap_space_is_the_cpu_swap_pool_in_blocks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*MODEL_RUN, "--caches", "paged", "--preemption-mode", "swap", "--swap-space", "2"]) == 0
    # Llama-3.1-8B: 128 KiB of KV a token, 2 MiB a block of 16; 2 GiB of CPU memory hold 1,024 blocks
    assert "paged 28,221 blocks x 16 slots, CPU swap pool 1,024 blocks" in capsys.readouterr().out
    assert main([*MODEL_RUN, "--caches", "paged", "--preemption-mode", "swap"]) == 0
    assert "CPU swap pool 2,048 blocks" in capsys.readouterr().out  # vLLM's default, 4 GiB


def test_a_sliding_window_model_says_its_kv_is_not_capped(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([MODEL_RUN[0], "--model", "Mistral-7B", *MODEL_RUN[3:]]) == 0
    assert "note:      Mistral-7B attends over a sliding window of 4,096 tokens" in capsys.readouterr().out
    assert main(MODEL_RUN) == 0
    assert "sliding window" not in capsys.readouterr().out


MODEL_ERRORS = [
    (["--tensor-parallel-size", "3"], "--tensor-parallel-size 3: does not divide"),
    (["--num-blocks", "100"], "--num-blocks: with --model the model and GPUs fix the KV memory"),
    (["--gpu", "Z80"], "--gpu Z80: GPU 'Z80' is not in the catalogue"),
    (["--gpu-memory-gib", "24"], "needs all of --gpu-memory-gib, --gpu-hbm-gbps and --gpu-tflops"),
    (
        ["--gpu-memory-gib", "48", "--gpu-hbm-gbps", "864", "--gpu-tflops", "181", "-tp", "2"],
        "--tensor-parallel-size 2: a GPU given by its numbers needs --gpu-link-gbps",
    ),
    (["--swap-space", "8"], "--swap-space sizes the swap pool of --preemption-mode swap"),
    (["--gpu-memory-utilization", "0.1"], "--gpu-memory-utilization 0.1: leaves"),
    (["--max-model-len", "200000"], "--max-model-len 200,000 exceeds Llama-3.1-8B's 131,072 positions"),
]


@pytest.mark.parametrize(("args", "message"), MODEL_ERRORS)
def test_bad_model_options_name_the_flag(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*MODEL_RUN, *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("pagedkv simulate: error: ") and message in captured.err, captured.err
    assert captured.out == ""


def test_hardware_options_without_a_model_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SMALL, "--no-plot", "--tensor-parallel-size", "2"]) == 2
    assert "--tensor-parallel-size describes the --model's hardware; add --model" in capsys.readouterr().err
