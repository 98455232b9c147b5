"""A tiny local checkpoint made on the spot: random weights and a tokenizer trained here, nothing downloaded.

For tests, docs and demos of `pagedkv.LLM` / `pagedkv generate --model` on a machine that cannot
download weights. A byte-level BPE tokenizer is trained with `tokenizers` on a few paragraphs and saved
with a chat template; a seeded random model of a supported family, sized to that vocabulary, is saved
beside it with `save_pretrained` (safetensors, one file or shards) and a generation_config.json naming
EOS. Its text is gibberish (random weights); everything around it is what a real checkpoint has.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from pagedkv.engine.models import random_model

PARAGRAPHS = [
    "The block manager hands out fixed-size blocks of key and value slots. A sequence grows one token at a "
    "time, and a new block is taken only when the last one is full.",
    "Paged attention reads keys and values through a block table, so a sequence never needs one long "
    "contiguous region of memory. Fragmentation stays below one block per sequence.",
    "When two requests share a prompt, their first blocks are shared too; copy on write separates them "
    "the first time one of them writes into a shared block.",
    "Continuous batching admits new requests at every step and retires finished ones, so the batch stays "
    "full and the accelerator stays busy. Preemption frees blocks when the pool runs dry.",
    "Hello world! The quick brown fox jumps over the lazy dog. Numbers: 0 1 2 3 4 5 6 7 8 9.",
]

SPECIAL = ["<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_tokenizer(vocab_size: int = 300) -> transformers.PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(PARAGRAPHS, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny_checkpoint(
    folder: str | os.PathLike[str],
    family: str = "llama",
    *,
    seed: int = 0,
    shard: bool = False,
    eos_token_id: int | list[int] | None = None,
    chat_template: bool = True,
    **overrides: Any,
) -> Path:
    """Write a tiny float64 checkpoint of `family` (2 layers, hidden 64) into `folder`; returns it.

    `shard=True` splits the weights into several safetensors files with an index; `overrides` go to
    the model config (see `random_model`)."""
    tokenizer = train_tokenizer()
    if not chat_template:
        tokenizer.chat_template = None
    model = random_model(
        family,
        vocab_size=len(tokenizer),
        seed=seed,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **overrides,
    )
    model.generation_config.eos_token_id = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder, max_shard_size="40KB" if shard else "1GB")
    tokenizer.save_pretrained(folder)
    return Path(folder)
