"""The forward pass of a Hugging Face decoder-only model over the paged KV cache.

Why our own forward pass rather than HF's with its attention swapped: HF's decoder layers expect a
padded `[batch, seq]` layout, a `Cache` object and a 4-D mask, while continuous batching wants a
packed token axis (prefills of different lengths and decodes side by side, no padding) and a slot
mapping. So this module walks the layers itself and calls HF's own sub-modules for everything that
is position-wise (embedding, RMSNorm, q/k/v/o projections with their biases, rotary tables, SwiGLU
MLP, final norm, lm_head, tied or not). Only attention is ours. Reusing those modules keeps the
arithmetic identical to HF's, including HF's choice to compute RMSNorm and the rotary tables in
float32, which is what makes token-identical greedy output possible.

What differs between the families is read from the modules and the config, not from the family name:
- Qwen3 and Gemma 3 normalise queries and keys per head (`self_attn.q_norm` / `k_norm`) before RoPE;
- Gemma 3 wraps both sub-layers in "sandwich" norms (`post_attention_layernorm` on the attention
  output, `pre_/post_feedforward_layernorm` around the MLP), scales embeddings (inside its
  `embed_tokens`), scales attention by `query_pre_attn_scalar` (its `self_attn.scaling`), uses one
  rotary table per layer type (local layers: sliding window and their own RoPE base) and may soft-cap
  the final logits;
- sliding windows come per layer from `layer_types` (Qwen2/3, Gemma 3) or for all layers (Mistral).
Features the paged attention does not implement (attention logit soft-capping, as in Gemma 2;
bidirectional attention) are refused with `UnsupportedModel` rather than computed wrongly.

Invariant: a call writes the K/V of exactly the tokens listed in the step's slot mapping, and the
logits it returns for a sequence depend only on that sequence's tokens (never on its batch mates).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from pagedkv.engine.errors import UnsupportedModel
from pagedkv.engine.families import SUPPORTED_MODEL_TYPES
from pagedkv.tensors import AttentionMetadata, CacheMismatch, PagedKVCache, paged_attention


@dataclass
class StepBatch:
    """The packed tokens of one engine step (prefill tokens first, then one token per decode)."""

    input_ids: torch.Tensor  # [num_tokens] long
    positions: torch.Tensor  # [num_tokens] long
    write_rows: torch.Tensor | None  # rows of the batch whose K/V is stored; None = all of them
    slot_mapping: torch.Tensor  # [num_written] long: where each stored row goes
    metadata: AttentionMetadata
    logits_rows: torch.Tensor  # [num_sequences] long: the row whose logits each sequence needs


class ModelRunner:
    """Wraps a loaded HF causal LM of a supported family for packed, paged inference."""

    def __init__(self, model: torch.nn.Module) -> None:
        config = getattr(model, "config", None)
        model_type = getattr(config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModel(
                f"model_type {model_type!r} is not supported; the engine runs "
                f"{', '.join(SUPPORTED_MODEL_TYPES)} "
                "causal LMs (a *ForCausalLM with .model.layers and .lm_head)"
            )
        _refuse_unsupported_features(config)
        self.model = model
        self.decoder = model.model
        self.layers = list(self.decoder.layers)
        attn = self.layers[0].self_attn
        self.num_layers = len(self.layers)
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = attn.head_dim
        self.scale = attn.scaling
        self.max_position = config.max_position_embeddings
        self.sliding_windows = _sliding_windows(config, self.num_layers)
        # Gemma 3: one rotary table per layer type; the others: one for all layers (key None)
        per_type = "layer_type" in inspect.signature(self.decoder.rotary_emb.forward).parameters
        self.rope_keys = list(config.layer_types) if per_type else [None] * self.num_layers
        self.sandwich_norms = hasattr(self.layers[0], "pre_feedforward_layernorm")
        self.qk_norm = hasattr(attn, "q_norm")
        self.final_logit_softcapping = getattr(config, "final_logit_softcapping", None)
        weight = model.lm_head.weight
        self.dtype, self.device = weight.dtype, weight.device

    def make_cache(self, num_blocks: int, block_size: int) -> PagedKVCache:
        """A paged cache shaped for this model, in the model's dtype and on its device."""
        return PagedKVCache(
            self.num_layers, num_blocks, block_size, self.num_kv_heads, self.head_dim, self.dtype, self.device
        )

    def check_cache(self, cache: PagedKVCache) -> None:
        want = (self.num_layers, self.num_kv_heads, self.head_dim, self.dtype, self.device)
        have = (cache.num_layers, cache.num_kv_heads, cache.head_dim, cache.dtype, cache.device)
        if want != have:
            raise CacheMismatch(
                f"cache (layers, kv heads, head_dim, dtype, device) = {have} does not fit the model's {want}"
            )

    @torch.inference_mode()
    def forward(self, cache: PagedKVCache, batch: StepBatch) -> torch.Tensor:
        """Run every layer over the packed tokens; logits [num_sequences, vocab] in the model dtype."""
        self.check_cache(cache)
        hidden = self.decoder.embed_tokens(batch.input_ids)  # [num_tokens, hidden]
        rope = {key: self._rotary(hidden, batch.positions, key) for key in set(self.rope_keys)}
        for index, layer in enumerate(self.layers):
            cos, sin = rope[self.rope_keys[index]]
            attn_out = self._attention(index, layer, hidden, cos, sin, cache, batch)
            if self.sandwich_norms:
                hidden = hidden + layer.post_attention_layernorm(attn_out)
                mlp_out = layer.mlp(layer.pre_feedforward_layernorm(hidden))
                hidden = hidden + layer.post_feedforward_layernorm(mlp_out)
            else:
                hidden = hidden + attn_out
                hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        hidden = self.decoder.norm(hidden.index_select(0, batch.logits_rows))
        logits = self.model.lm_head(hidden)
        if self.final_logit_softcapping is not None:
            cap = self.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _rotary(
        self, hidden: torch.Tensor, positions: torch.Tensor, layer_type: str | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin: [num_tokens, 1, head_dim], from HF's rotary module (which wants [batch, seq])."""
        extra = {} if layer_type is None else {"layer_type": layer_type}
        cos, sin = self.decoder.rotary_emb(hidden, positions.unsqueeze(0), **extra)
        return cos[0].unsqueeze(1), sin[0].unsqueeze(1)

    def _attention(
        self,
        index: int,
        layer: torch.nn.Module,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: PagedKVCache,
        batch: StepBatch,
    ) -> torch.Tensor:
        attn = layer.self_attn
        x = layer.input_layernorm(hidden)
        num_tokens = x.shape[0]
        q = attn.q_proj(x).view(num_tokens, self.num_heads, self.head_dim)  # [num_tokens, n_heads, head_dim]
        k = attn.k_proj(x).view(
            num_tokens, self.num_kv_heads, self.head_dim
        )  # [num_tokens, n_kv_heads, head_dim]
        v = attn.v_proj(x).view(num_tokens, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if batch.write_rows is not None:
            k, v = k.index_select(0, batch.write_rows), v.index_select(0, batch.write_rows)
        cache.write(index, batch.slot_mapping, k, v)
        out = paged_attention(
            q,
            cache.key_cache(index),
            cache.value_cache(index),
            batch.metadata,
            scale=self.scale,
            sliding_window=self.sliding_windows[index],
        )
        return attn.o_proj(out.view(num_tokens, self.num_heads * self.head_dim))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, rotate-half convention, the same arithmetic in the same order as HF."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos) + (rotated * sin)


def _refuse_unsupported_features(config: object) -> None:
    if getattr(config, "attn_logit_softcapping", None) is not None:
        raise UnsupportedModel(
            f"attn_logit_softcapping={config.attn_logit_softcapping} (attention scores soft-capped, as in "
            "Gemma 2) is not implemented by the paged attention"
        )
    if getattr(config, "use_bidirectional_attention", False):
        raise UnsupportedModel("use_bidirectional_attention=True: the engine runs causal attention only")


def _sliding_windows(config: object, num_layers: int) -> list[int | None]:
    """Per-layer sliding window as HF applies it: Mistral windows every layer; Qwen2/3 and Gemma 3 per
    `layer_types`."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        unknown = set(layer_types) - {"full_attention", "sliding_attention"}
        if unknown:
            raise UnsupportedModel(
                f"layer types {sorted(unknown)} are not supported (only full and sliding attention)"
            )
        if window is None:
            return [None] * num_layers
        return [window if kind == "sliding_attention" else None for kind in layer_types]
    return [window] * num_layers
