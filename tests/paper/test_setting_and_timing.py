"""The paper's setting as numbers, and the iteration-time model built from it."""

from __future__ import annotations

import pytest

from pagedkv.errors import InvalidArgument
from pagedkv.paper.setting import GIB, GpuSpec, ModelSpec, PaperSetting
from pagedkv.paper.timing import RooflineIterationTime


def test_opt13b_on_a100_gives_the_papers_kv_capacity() -> None:
    setting = PaperSetting()
    assert setting.model.kv_bytes_per_token == 800 * 1024  # 2 (K, V) x 40 layers x 5120 x 2 bytes
    assert setting.num_blocks == 983  # 12 GiB / (16 x 800 KiB), rounded down
    assert setting.num_slots == 15_728  # "~15.7K token slots"
    # Orca (Max) reserves 128-block chunks: 7 fit, and the 87 left over are the paper's 8.9 % external
    assert round(100 * (setting.num_blocks - 7 * 128) / setting.num_blocks, 1) == 8.9


def test_block_size_recuts_the_same_memory() -> None:
    setting = PaperSetting().with_block_size(256)
    assert setting.num_blocks == 61
    assert setting.num_slots == 61 * 256 <= 15_728
    assert setting.describe().count("61 blocks of 256") == 1


def test_setting_without_room_for_a_block_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="holds no block"):
        PaperSetting(gpu=GpuSpec(kv_cache_bytes=1024))
    with pytest.raises(InvalidArgument, match="block_size=0"):
        PaperSetting(block_size=0)


def test_decode_iteration_is_bound_by_reading_weights_and_kv() -> None:
    model = RooflineIterationTime(hbm_efficiency=1.0, compute_efficiency=1.0, host_overhead_s=0.0)
    weights = 12.85e9 * 2 / 1.555e12
    kv = 15_000 * 819_200 / 1.555e12
    assert model.weights_s == pytest.approx(weights)
    # 30 decoding sequences: their matrix multiplies hide under the weight read
    assert model(30, 0, 15_000) == pytest.approx(weights + kv)


def test_prefill_iteration_is_bound_by_compute() -> None:
    model = RooflineIterationTime(hbm_efficiency=1.0, compute_efficiency=0.5, host_overhead_s=0.002)
    flops = 2 * 12.85e9 * 2_000 / (312e12 * 0.5)
    assert flops > model.weights_s
    assert model(0, 2_000, 0) == pytest.approx(0.002 + flops)


def test_defaults_put_a_full_decode_step_near_40_ms() -> None:
    """The defaults (80 % of HBM, 50 % of fp16 peak, 10 ms host) for ~34 sequences filling 15.7K slots."""
    seconds = RooflineIterationTime()(34, 0, 15_000)
    assert 0.035 < seconds < 0.045
    text = RooflineIterationTime().describe()
    assert "host 10.0 ms" in text and "80% of 1,555 GB/s" in text and "50% of 312 TFLOP/s" in text


def test_slower_engine_means_longer_iterations() -> None:
    fast, slow = RooflineIterationTime(host_overhead_s=0.005), RooflineIterationTime(hbm_efficiency=0.6)
    assert fast(30, 0, 10_000) < RooflineIterationTime()(30, 0, 10_000) < slow(30, 0, 10_000)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hbm_efficiency": 0.0},
        {"hbm_efficiency": 1.5},
        {"compute_efficiency": -0.1},
        {"host_overhead_s": -1.0},
    ],
)
def test_impossible_time_models_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidArgument, match=next(iter(kwargs))):
        RooflineIterationTime(**kwargs)


def test_a_bigger_model_reads_more_kv_per_token() -> None:
    model = ModelSpec(num_layers=80, hidden_size=8192)
    assert model.kv_bytes_per_token == 2 * 80 * 8192 * 2
    assert PaperSetting(model=model, gpu=GpuSpec(kv_cache_bytes=GIB)).num_blocks == GIB // (
        16 * 2 * 80 * 8192 * 2
    )
