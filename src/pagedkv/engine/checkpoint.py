"""Loading a local Hugging Face checkpoint folder: config, safetensors weights, tokenizer, EOS ids.

Only local folders are read and nothing is ever downloaded (`local_files_only=True` everywhere, and
the folder is checked first). Everything that can be checked from file names and config.json is
checked before torch or transformers load anything, so a wrong path costs one line, not a traceback:

- the folder exists and has `config.json` whose `model_type` is a supported family;
- weights are `model.safetensors`, or `model.safetensors.index.json` with every shard it lists
  (a `pytorch_model.bin` checkpoint is refused: pickle files can run code on load);
- a tokenizer (`tokenizer.json`, or `tokenizer_config.json` with its vocabulary files);
- the weights fit in the memory available now.

EOS ids come from `generation_config.json` when present (it may list several, as chat models do),
else from config.json, else from the tokenizer.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pagedkv.engine.errors import CheckpointError, UnsupportedModel
from pagedkv.engine.families import SUPPORTED_MODEL_TYPES
from pagedkv.tensors.memory import check_fits_in_memory

DTYPES = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}
"""Model dtypes a checkpoint can be loaded in, and their size in bytes."""


@dataclass(frozen=True)
class CheckpointFiles:
    """What `inspect_checkpoint` found, before anything heavy is imported."""

    path: Path
    config: dict[str, Any]
    weight_files: list[Path]
    eos_token_ids: list[int] | None  # None: ask the tokenizer

    @property
    def max_model_len(self) -> int:
        return int(self.config.get("max_position_embeddings", 2048))


@dataclass(frozen=True)
class Checkpoint:
    model: Any  # a transformers *ForCausalLM, eval mode
    tokenizer: Any  # a transformers PreTrainedTokenizerBase
    eos_token_ids: list[int]


def inspect_checkpoint(path: str | os.PathLike[str]) -> CheckpointFiles:
    """Check the folder's files and config (standard library only); `CheckpointError` names what is
    missing, `UnsupportedModel` an unsupported `model_type`."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{path}: no such folder (a local Hugging Face checkpoint folder is needed)")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no config.json, so this is not a Hugging Face model folder")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_file}: not readable JSON ({exc})") from None
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModel(
            f"{config_file}: model_type {model_type!r} is not supported; the engine runs "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    weights = _weight_files(folder)
    if not (folder / "tokenizer.json").is_file() and not (folder / "tokenizer_config.json").is_file():
        raise CheckpointError(f"{path}: no tokenizer (tokenizer.json or tokenizer_config.json)")
    return CheckpointFiles(folder, config, weights, _eos_token_ids(folder, config))


def load_checkpoint(path: str | os.PathLike[str], dtype: str = "float32") -> Checkpoint:
    """Load model and tokenizer from a local folder, in `dtype` (one of `DTYPES`), on the CPU."""
    if dtype not in DTYPES:
        raise CheckpointError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    files = inspect_checkpoint(path)
    stored = sum(f.stat().st_size for f in files.weight_files)
    stored_size = DTYPES.get(str(files.config.get("torch_dtype") or files.config.get("dtype")), 4)
    check_fits_in_memory(
        stored * DTYPES[dtype] // stored_size, f"the weights of {path} in {dtype}", "use a smaller model"
    )
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(files.path, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        files.path, local_files_only=True, dtype=getattr(torch, dtype), trust_remote_code=False
    ).eval()
    eos = files.eos_token_ids
    if eos is None:
        eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    return Checkpoint(model, tokenizer, eos)


def _weight_files(folder: Path) -> list[Path]:
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, AttributeError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index ({exc!r})") from None
        missing = [name for name in shards if not (folder / name).is_file()]
        if missing:
            raise CheckpointError(
                f"{folder}: shard {missing[0]} listed in {index.name} is missing "
                f"({len(missing)} of {len(shards)} shards missing)"
            )
        return [folder / name for name in shards]
    if any(folder.glob("*.bin")):
        raise CheckpointError(
            f"{folder}: only .bin (pickle) weights; pagedkv loads safetensors only "
            "(convert with model.save_pretrained(..., safe_serialization=True))"
        )
    raise CheckpointError(f"{folder}: no weights (model.safetensors or model.safetensors.index.json)")


def _eos_token_ids(folder: Path, config: dict[str, Any]) -> list[int] | None:
    eos: object = None
    generation = folder / "generation_config.json"
    if generation.is_file():
        try:
            eos = json.loads(generation.read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            raise CheckpointError(f"{generation}: not readable JSON ({exc})") from None
    if eos is None:
        eos = config.get("eos_token_id")
    if eos is None:
        return None
    ids = [eos] if isinstance(eos, int) else eos
    if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
        raise CheckpointError(f"{folder}: eos_token_id must be an int or a list of ints, got {eos!r}")
    return ids
