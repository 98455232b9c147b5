"""A model as KV memory, weight memory and step time see it, read from a Hugging Face ``config.json``.

Invariant: every number a `ModelConfig` holds is read from the config (or is the documented Hugging
Face default of a key the family defines, e.g. ``num_key_value_heads`` = ``num_attention_heads``), and
everything else (KV bytes per token, parameters, FLOPs) is derived from those numbers here, so a
reader can check each one by hand against the model's public config. A key that is missing, of the
wrong type or out of range is a one-line `ModelConfigError` naming the key and the file: a planning
tool that silently guesses a layer count gives a confident wrong answer.

Families (``model_type``) and how they are laid out, as vLLM builds them:

* ``llama``, ``mistral``, ``qwen2``: rotary positions, RMSNorm, a gated MLP (gate, up, down
  projections of ``intermediate_size``), grouped-query attention (``num_key_value_heads`` K/V heads
  of ``head_dim``); Qwen2 adds biases to q, k, v. ``sliding_window`` (Mistral; Qwen2 only with
  ``use_sliding_window``) caps the tokens a sequence keeps in its KV cache.
* ``opt``: learned positions (``max_position_embeddings`` + 2 rows), LayerNorm with biases, a plain
  MLP of ``ffn_dim``, biases on every linear layer, one K/V head per attention head, and the LM head
  tied to the token embedding unless ``tie_word_embeddings`` is false.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pagedkv.errors import InvalidArgument

FAMILIES = ("llama", "mistral", "qwen2", "opt")
_GATED = ("llama", "mistral", "qwen2")
_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "OPTForCausalLM": "opt",
}
WEIGHT_DTYPES = {"float16": 2, "bfloat16": 2, "float32": 2}
"""Bytes a weight takes when vLLM serves it with ``--dtype auto``: 16-bit, a float32 checkpoint too."""

KV_CACHE_DTYPES = {
    "auto": None,  # the model's dtype
    "float16": 2,
    "bfloat16": 2,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
    "fp8_inc": 1,
}
"""``--kv-cache-dtype`` values as vLLM spells them (vllm/config/cache.py ``CacheDType``), in bytes."""

OPT_POSITION_OFFSET = 2  # OPT's learned position table has max_position_embeddings + 2 rows


class ModelConfigError(InvalidArgument):
    """A model that cannot be read: unknown name, unreadable file, missing or malformed key."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The numbers of one decoder-only model that memory and time depend on (see the module docstring).

    Build it with `ModelConfig.from_pretrained` (a file, a checkpoint folder or a catalogue name) or
    `ModelConfig.from_dict`; the fields are the config's, renamed to one spelling across families.
    """

    name: str
    family: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_model_len: int
    tie_word_embeddings: bool
    dtype: str
    sliding_window: int | None = None
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    layer_norm: bool = False  # LayerNorm (weight and bias) rather than RMSNorm (weight)
    learned_positions: int = 0  # rows of a learned position embedding (OPT), 0 for rotary
    word_embed_proj_dim: int = 0  # OPT's embedding width when it differs from hidden_size, else 0
    final_norm: bool = True
    source: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ModelConfigError(f"{self.source}: model_type {self.family!r} is not one of {FAMILIES}")
        if self.num_attention_heads % self.num_kv_heads:
            raise ModelConfigError(
                f"{self.source}: num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_kv_heads}"
            )
        if self.dtype not in WEIGHT_DTYPES:
            raise ModelConfigError(
                f"{self.source}: torch_dtype {self.dtype!r} is not one of {', '.join(WEIGHT_DTYPES)} "
                "(quantized weights are not modelled)"
            )

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path_or_name: str | os.PathLike[str]) -> ModelConfig:
        """A ``config.json`` file, a checkpoint folder holding one, or a catalogue name (`catalogue()`)."""
        path = Path(path_or_name)
        if path.is_dir():
            path = path / "config.json"
            if not path.is_file():
                raise ModelConfigError(f"{path_or_name}: folder has no config.json")
        if path.is_file():
            return cls.from_dict(_read_json(path), source=str(path), name=_name_of(path))
        entry = _catalogue_entry(str(path_or_name))
        if entry is None:
            raise ModelConfigError(
                f"model {os.fspath(path_or_name)!r}: not a config.json, a checkpoint folder, or a "
                f"catalogue name ({', '.join(catalogue())})"
            )
        name, data = entry
        return cls.from_dict(data["config"], source=data["source"], name=name)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], source: str = "config", name: str = "") -> ModelConfig:
        """Parse the keys of a Hugging Face config (see the module docstring for each family's keys)."""
        keys = _Keys(config, source)
        family = _family(keys)
        common: dict[str, Any] = {
            "name": name or str(config.get("_name_or_path") or family),
            "family": family,
            "num_layers": keys.positive("num_hidden_layers"),
            "hidden_size": keys.positive("hidden_size"),
            "num_attention_heads": keys.positive("num_attention_heads"),
            "vocab_size": keys.positive("vocab_size"),
            "max_model_len": keys.positive("max_position_embeddings"),
            "dtype": keys.dtype(),
            "source": source,
        }
        if family == "opt":
            return cls(**common, **_opt_fields(keys, common["hidden_size"], common["max_model_len"]))
        return cls(**common, **_gated_fields(keys, family, common))

    # -- derived quantities ---------------------------------------------------------------------

    @property
    def gated_mlp(self) -> bool:
        return self.family in _GATED

    @property
    def embed_dim(self) -> int:
        """Width of the token embedding and LM head (OPT's word_embed_proj_dim, else hidden_size)."""
        return self.word_embed_proj_dim or self.hidden_size

    @property
    def weight_bytes_per_param(self) -> int:
        return WEIGHT_DTYPES[self.dtype]

    def kv_dtype_bytes(self, kv_cache_dtype: str = "auto") -> int:
        """Bytes of one K or V element for a vLLM ``--kv-cache-dtype`` value ("auto": the model's)."""
        if kv_cache_dtype not in KV_CACHE_DTYPES:
            raise ModelConfigError(
                f"kv_cache_dtype {kv_cache_dtype!r}: choose one of {', '.join(KV_CACHE_DTYPES)}"
            )
        return KV_CACHE_DTYPES[kv_cache_dtype] or self.weight_bytes_per_param

    def kv_heads_per_gpu(self, tensor_parallel_size: int = 1) -> int:
        """K/V heads each GPU stores: split across GPUs, replicated when fewer than GPUs (vLLM's
        ``ModelConfig.get_num_kv_heads``: ``max(1, total // tensor_parallel_size)``)."""
        return max(1, self.num_kv_heads // tensor_parallel_size)

    def kv_bytes_per_token(self, kv_cache_dtype: str = "auto", tensor_parallel_size: int = 1) -> int:
        """KV bytes one token takes on each GPU: 2 (K, V) x layers x KV heads per GPU x head_dim x dtype.

        With ``tensor_parallel_size=1`` this is the model's whole KV footprint per token.
        """
        heads = self.kv_heads_per_gpu(tensor_parallel_size)
        return 2 * self.num_layers * heads * self.head_dim * self.kv_dtype_bytes(kv_cache_dtype)

    def kv_tokens(self, seq_len: int) -> int:
        """Tokens of a `seq_len`-token sequence that stay in the KV cache (all, or the sliding window)."""
        return seq_len if self.sliding_window is None else min(seq_len, self.sliding_window)

    @property
    def num_params(self) -> int:
        """Every parameter, embeddings and LM head included (the LM head once when tied)."""
        return sum(self._param_groups(tensor_parallel_size=1).values())

    def params_per_gpu(self, tensor_parallel_size: int = 1) -> int:
        """Parameters each GPU holds under vLLM's tensor parallelism (see `_param_groups`)."""
        return sum(self._param_groups(tensor_parallel_size).values())

    def weight_bytes_per_gpu(self, tensor_parallel_size: int = 1) -> int:
        return self.params_per_gpu(tensor_parallel_size) * self.weight_bytes_per_param

    def matmul_params_per_gpu(self, tensor_parallel_size: int = 1, *, lm_head: bool) -> int:
        """Weights a token is multiplied through on each GPU: every linear layer, plus the LM head when
        the token produces logits (a decoded token does; a prompt token other than the last does not)."""
        groups = self._param_groups(tensor_parallel_size)
        total = groups["attention"] + groups["mlp"] + groups["embed_projections"]
        # a tied LM head is stored once (as the embedding) but multiplied through all the same
        return total + (self.vocab_size * self.embed_dim // tensor_parallel_size if lm_head else 0)

    def flops_per_token(self, tensor_parallel_size: int = 1, *, lm_head: bool = True) -> float:
        """Matrix-multiply FLOPs of one token on each GPU: 2 per weight it meets (attention scores
        over the context are not counted: decode reads them from memory, see `RooflineStepTime`)."""
        return 2.0 * self.matmul_params_per_gpu(tensor_parallel_size, lm_head=lm_head)

    def _param_groups(self, tensor_parallel_size: int) -> dict[str, int]:
        """Parameters per GPU by group. vLLM shards q, o and the MLP by columns/rows, K/V by heads (a
        head is replicated when there are fewer heads than GPUs), and the vocabulary of the embedding
        and LM head; norms, biases, learned positions and OPT's embedding projections are replicated
        (counted whole on every GPU: a few MB at most)."""
        tp = tensor_parallel_size
        h, d = self.hidden_size, self.head_dim
        q_width, kv_width = self.num_attention_heads * d, self.kv_heads_per_gpu(tp) * d
        q_and_o = 2 * h * q_width // tp
        kv = 2 * h * kv_width
        biases = (q_width + 2 * self.num_kv_heads * d if self.qkv_bias else 0) + (h if self.o_bias else 0)
        mlp_width = self.intermediate_size
        if self.gated_mlp:
            mlp = 3 * h * mlp_width // tp
            biases_mlp = 2 * mlp_width + h if self.mlp_bias else 0
        else:
            mlp = 2 * h * mlp_width // tp
            biases_mlp = mlp_width + h if self.mlp_bias else 0
        norm = 2 * h if self.layer_norm else h
        layers = self.num_layers
        embed = self.vocab_size * self.embed_dim
        projections = 2 * self.embed_dim * h if self.word_embed_proj_dim else 0
        return {
            "attention": layers * (q_and_o + kv),
            "mlp": layers * mlp,
            "biases_and_norms": layers * (biases + biases_mlp + 2 * norm) + (norm if self.final_norm else 0),
            "embedding": embed // tp,
            "positions": self.learned_positions * h,
            "embed_projections": projections,
            "lm_head": 0 if self.tie_word_embeddings else embed // tp,
        }

    def describe(self) -> str:
        """One line: the shape that sets KV memory, with the parameter count."""
        window = f", sliding window {self.sliding_window:,}" if self.sliding_window else ""
        return (
            f"{self.name}: {self.num_layers} layers, hidden {self.hidden_size}, {self.num_attention_heads} "
            f"heads / {self.num_kv_heads} KV heads of {self.head_dim}, {self.num_params / 1e9:.2f} B params "
            f"({self.dtype}), max {self.max_model_len:,} tokens{window}"
        )


def catalogue() -> tuple[str, ...]:
    """Names of the models shipped with pagedkv (``simulator/catalogue/models.json``)."""
    return tuple(_catalogue())


def catalogue_source(name: str) -> str:
    """Where a catalogue model's numbers come from (its public config.json)."""
    entry = _catalogue_entry(name)
    if entry is None:
        raise ModelConfigError(f"model {name!r} is not in the catalogue ({', '.join(catalogue())})")
    return str(entry[1]["source"])


# -- parsing helpers ---------------------------------------------------------------------------


class _Keys:
    """Typed access to a config's keys; every failure names the key and the file."""

    def __init__(self, config: Mapping[str, Any], source: str) -> None:
        if not isinstance(config, Mapping):
            raise ModelConfigError(f"{source}: expected a JSON object, got {type(config).__name__}")
        self.config, self.source = config, source

    def positive(self, key: str, default: int | None = None) -> int:
        value = self.config.get(key, default)
        if value is None:
            raise ModelConfigError(f"{self.source}: missing key {key!r}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelConfigError(f"{self.source}: {key}={value!r} must be a positive integer")
        return value

    def count(self, key: str, default: int) -> int:
        """A non-negative integer (a number of layers, say), `default` when the key is absent."""
        value = self.config.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ModelConfigError(f"{self.source}: {key}={value!r} must be an integer >= 0")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.config.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ModelConfigError(f"{self.source}: {key}={value!r} must be true or false")
        return value

    def optional_positive(self, key: str) -> int | None:
        return None if self.config.get(key) is None else self.positive(key)

    def dtype(self) -> str:
        value = self.config.get("torch_dtype", self.config.get("dtype", "float16"))
        if value not in WEIGHT_DTYPES:
            raise ModelConfigError(
                f"{self.source}: torch_dtype={value!r} must be one of {', '.join(WEIGHT_DTYPES)} "
                "(quantized weights are not modelled)"
            )
        if self.config.get("quantization_config") is not None:
            raise ModelConfigError(
                f"{self.source}: quantization_config is set; quantized weights are not modelled"
            )
        return str(value)


def _family(keys: _Keys) -> str:
    family = keys.config.get("model_type")
    if family is None:
        architectures = keys.config.get("architectures") or []
        known = [_ARCHITECTURES[a] for a in architectures if a in _ARCHITECTURES]
        if not known:
            raise ModelConfigError(f"{keys.source}: missing key 'model_type' (and no known 'architectures')")
        family = known[0]
    if family not in FAMILIES:
        raise ModelConfigError(
            f"{keys.source}: model_type={family!r} is not supported; supported: {', '.join(FAMILIES)}"
        )
    return str(family)


def _gated_fields(keys: _Keys, family: str, common: Mapping[str, Any]) -> dict[str, Any]:
    heads, hidden = common["num_attention_heads"], common["hidden_size"]
    head_dim = keys.optional_positive("head_dim")
    if head_dim is None:
        if hidden % heads:
            raise ModelConfigError(
                f"{keys.source}: hidden_size={hidden} is not a multiple of num_attention_heads={heads} "
                "and there is no 'head_dim' key"
            )
        head_dim = hidden // heads
    attention_bias = keys.flag("attention_bias", False)
    return {
        "num_kv_heads": keys.positive("num_key_value_heads", heads),
        "head_dim": head_dim,
        "intermediate_size": keys.positive("intermediate_size"),
        "tie_word_embeddings": keys.flag("tie_word_embeddings", False),
        "sliding_window": _sliding_window(keys, family, common["num_layers"]),
        "qkv_bias": attention_bias or family == "qwen2",
        "o_bias": attention_bias,
        "mlp_bias": keys.flag("mlp_bias", False),
    }


def _sliding_window(keys: _Keys, family: str, num_layers: int) -> int | None:
    """The window every layer attends over, or None. Qwen2 applies its ``sliding_window`` only with
    ``use_sliding_window`` and only to layers from ``max_window_layers`` on; a model mixing full and
    sliding layers keeps both kinds of KV, which this single-window model does not describe."""
    window = keys.optional_positive("sliding_window")
    if family != "qwen2" or window is None:
        return window
    if not keys.flag("use_sliding_window", False):
        return None
    first_sliding = keys.count("max_window_layers", num_layers)
    if first_sliding >= num_layers:
        return None
    if first_sliding > 0:
        raise ModelConfigError(
            f"{keys.source}: use_sliding_window with max_window_layers={first_sliding} of {num_layers} "
            "layers mixes full and sliding-window layers, which is not modelled"
        )
    return window


def _opt_fields(keys: _Keys, hidden: int, max_positions: int) -> dict[str, Any]:
    heads = keys.positive("num_attention_heads")
    if hidden % heads:
        raise ModelConfigError(
            f"{keys.source}: hidden_size={hidden} is not a multiple of num_attention_heads={heads}"
        )
    projection = keys.positive("word_embed_proj_dim", hidden)
    bias = keys.flag("enable_bias", True)
    return {
        "num_kv_heads": heads,
        "head_dim": hidden // heads,
        "intermediate_size": keys.positive("ffn_dim"),
        "tie_word_embeddings": keys.flag("tie_word_embeddings", True),
        "qkv_bias": bias,
        "o_bias": bias,
        "mlp_bias": bias,
        "layer_norm": True,
        "learned_positions": max_positions + OPT_POSITION_OFFSET,
        "word_embed_proj_dim": projection if projection != hidden else 0,
        "final_norm": keys.flag("do_layer_norm_before", True)
        and not keys.flag("_remove_final_layer_norm", False),
    }


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelConfigError(f"{path}: cannot be read ({exc})") from None


def _name_of(path: Path) -> str:
    return path.parent.name if path.name == "config.json" and path.parent.name else path.stem


def _catalogue() -> dict[str, Any]:
    text = resources.files("pagedkv.simulator").joinpath("catalogue/models.json").read_text(encoding="utf-8")
    return dict(json.loads(text)["models"])


def _catalogue_entry(name: str) -> tuple[str, dict[str, Any]] | None:
    wanted = name.strip().lower()
    for key, entry in _catalogue().items():
        if wanted in (key.lower(), str(entry.get("hf_id", "")).lower()):
            return key, entry
    return None
