"""A folder that is not a supported checkpoint is one line naming what is missing, before torch loads it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from checkpoints import save_checkpoint

from pagedkv.engine import LLM, CheckpointError, UnsupportedModel
from pagedkv.engine.checkpoint import inspect_checkpoint


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("sharded"), "qwen2", shard=True)


def copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def test_a_good_checkpoint_passes(sharded: Path) -> None:
    files = inspect_checkpoint(sharded)
    assert len(files.weight_files) > 1 and files.config["model_type"] == "qwen2"
    assert files.eos_token_ids == [1]  # "</s>" from generation_config.json


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (lambda f: shutil.rmtree(f), CheckpointError, "no such folder"),
        (lambda f: (f / "config.json").unlink(), CheckpointError, "no config.json"),
        (
            lambda f: (f / "config.json").write_text("{oops"),
            CheckpointError,
            "config.json: not readable JSON",
        ),
        (
            lambda f: (f / "config.json").write_text(json.dumps({"model_type": "gpt2"})),
            UnsupportedModel,
            "model_type 'gpt2' is not supported; the engine runs llama, mistral, qwen2, qwen3, gemma3_text",
        ),
        (lambda f: (f / "model-00002-of-00014.safetensors").unlink(), CheckpointError, "shard model-00002"),
        (lambda f: (f / "model.safetensors.index.json").unlink(), CheckpointError, "no weights"),
        (
            lambda f: [p.unlink() for p in f.glob("*.safetensors*")] and (f / "pytorch_model.bin").touch(),
            CheckpointError,
            "only .bin \\(pickle\\) weights",
        ),
        (
            lambda f: [(f / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")],
            CheckpointError,
            "no tokenizer",
        ),
        (
            lambda f: (f / "generation_config.json").write_text(json.dumps({"eos_token_id": "x"})),
            CheckpointError,
            "eos_token_id must be an int or a list",
        ),
    ],
)
def test_bad_folders_name_what_is_missing(sharded: Path, tmp_path: Path, damage, error, message) -> None:
    folder = copy(sharded, tmp_path)
    assert len(list(folder.glob("model-*.safetensors"))) == 14
    damage(folder)
    with pytest.raises(error, match=message) as info:
        LLM(folder)
    assert "\n" not in str(info.value)
