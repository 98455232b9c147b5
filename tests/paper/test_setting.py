"""The paper's setting from the simulator's catalogues and roofline, and the run's validated knobs."""

from __future__ import annotations

import dataclasses

import pytest

from pagedkv.paper.setting import DEFAULT_SEEDS, PaperConfig, PaperSetting, paper_deployment, paper_time_model
from pagedkv.simulator.deployment import Deployment
from pagedkv.simulator.gpu import GIB
from pagedkv.simulator.option_error import OptionError
from pagedkv.simulator.roofline import RooflineStepTime


def test_opt13b_on_a100_gives_the_papers_kv_capacity() -> None:
    setting = PaperSetting()
    deployment = setting.deployment
    assert (deployment.model.name, deployment.gpu.name) == ("OPT-13B", "A100-40GB")  # the catalogues
    assert deployment.kv_bytes_per_token == 2 * 40 * 40 * 128 * 2 == 800 * 1024
    assert setting.num_blocks == 12 * GIB // (16 * 800 * 1024) == 983
    assert setting.num_slots == 983 * 16 == 15_728  # "~15.7K token slots"
    # Orca (Max) reserves 128-block chunks: 7 fit, and the 87 left over are the paper's 8.9 % external
    assert round(100 * (setting.num_blocks - 7 * 128) / setting.num_blocks, 1) == 8.9
    assert setting.max_seq_len == 2048  # OPT's max_position_embeddings


def test_todays_vllm_accounting_of_the_same_deployment_is_stated() -> None:
    """The setting's docstring says vLLM's own sum gives 11.56 GiB, 946 blocks: keep it true."""
    profiled = dataclasses.replace(paper_deployment(), kv_cache_memory_bytes=None)
    assert round(profiled.memory_terms().kv_cache_bytes / GIB, 2) == 11.56
    assert profiled.num_gpu_blocks == 946


def test_block_size_recuts_the_same_memory() -> None:
    setting = PaperSetting().with_block_size(256)
    assert setting.num_blocks == 12 * GIB // (256 * 800 * 1024) == 61
    assert setting.num_slots == 61 * 256 <= 15_728
    assert setting.describe().count("61 blocks of 256") == 1


def test_the_time_model_is_the_simulators_roofline_of_the_deployment() -> None:
    model = paper_time_model()
    assert isinstance(model, RooflineStepTime)
    assert (
        model
        == Deployment(
            paper_deployment().model, paper_deployment().gpu, kv_cache_memory_bytes=12 * GIB
        ).step_time_model()
    )
    # the paper's own formula (12.85e9 params read once, 800 KiB a context token) for a full decode step
    paper = 0.010 + 12.85e9 * 2 / (1.555e12 * 0.8) + 15_000 * 819_200 / (1.555e12 * 0.8)
    assert model(34, 0, 15_000) == pytest.approx(paper, rel=1e-3)


def test_defaults_run_ten_seeds() -> None:
    assert PaperConfig().seeds == DEFAULT_SEEDS == tuple(range(10))


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"figures": ("fig3",)}, "figures"),
        ({"figures": ()}, "figures"),
        ({"duration": 0.0}, "duration"),
        ({"window": (500.0, 100.0)}, "window"),
        ({"duration": 200.0}, "window"),  # the default window ends at 900 s
        ({"fig13a_rate": -1.0}, "fig13a_rate"),
        ({"seeds": ()}, "seeds"),
        ({"seeds": (1, 1)}, "seeds"),
        ({"fig15_widths": (1, 2)}, "fig15_widths"),
        ({"beam_prune_prob": 1.5}, "beam_prune_prob"),
    ],
)
def test_impossible_configs_name_the_option(kwargs: dict[str, object], option: str) -> None:
    with pytest.raises(OptionError) as info:
        PaperConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.option == option


def test_scheduler_limits_are_checked() -> None:
    with pytest.raises(OptionError) as info:
        PaperSetting(paper_deployment(max_num_batched_tokens=2000))
    assert info.value.option == "max_num_batched_tokens"  # a recomputed 2,047-token sequence must fit
    with pytest.raises(OptionError) as info:
        PaperSetting(paper_deployment(max_num_seqs=4096))
    assert info.value.option == "max_num_seqs"
    assert "steps of at most 2,560 tokens and 256 sequences" in PaperSetting().describe()
