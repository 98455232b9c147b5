"""`LLM`: text in, text out, over a local Hugging Face checkpoint (vLLM's and nano-vllm's front end).

    from pagedkv import LLM, SamplingParams
    llm = LLM("path/to/checkpoint")
    for out in llm.generate(["The capital of France is"], SamplingParams(temperature=0, max_tokens=8)):
        print(out.outputs[0].text)

A prompt is a string (encoded with the tokenizer's special tokens, as HF and vLLM do), a list of
token ids, or a chat conversation (a list of {"role", "content"} dicts, rendered by the tokenizer's
chat template with the generation prompt added). `generate` returns one `RequestOutput` per prompt;
`stream` yields each sample's new text as it is produced; `add_request` / `step` / `abort_request`
drive the engine one step at a time.

Invariant: `LLM` owns no generation state of its own; requests, blocks and outputs all live in its
`Engine`, so every guarantee of the engine (a failed call leaves it clean, abort frees blocks at
once) holds here too. `stream` aborts its unfinished requests when the caller stops iterating.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

from pagedkv.engine.checkpoint import load_checkpoint
from pagedkv.engine.engine import Engine
from pagedkv.engine.errors import InvalidPrompt
from pagedkv.engine.request_output import RequestOutput
from pagedkv.engine.sampling_params import SamplingParams
from pagedkv.engine.threads import set_num_threads
from pagedkv.errors import InvalidArgument

Prompt = str | Seq[int] | Seq[Mapping[str, Any]]
"""Text, token ids, or a chat conversation."""

Params = SamplingParams | Seq[SamplingParams] | None
"""One `SamplingParams` for every prompt, one per prompt, or None for the defaults."""

DEFAULT_KV_CACHE_BYTES = 2**30
"""KV pool when `num_blocks` is not given: enough for 16 sequences of the model's full length, capped
at this many bytes."""


@dataclass(frozen=True)
class StreamOutput:
    """New output of one sample since the previous `StreamOutput` of that sample."""

    prompt_index: int  # position of the prompt in the list given to `stream`
    request_id: int
    index: int  # which of the request's n samples
    text: str  # new text (held back while it could still be the start of a stop string)
    token_ids: list[int]  # new tokens
    finish_reason: str | None  # set on the sample's last StreamOutput


class LLM:
    """A local checkpoint folder loaded into a paged `Engine`, with its tokenizer.

    `dtype`: float32 (default: the CPU's fast path and the Numba decode kernel), float64, bfloat16
    or float16. `num_blocks`: KV pool size in blocks of `block_size` tokens (default: see
    `DEFAULT_KV_CACHE_BYTES`). `num_threads`: torch's intra-op threads (default: one per core not
    busy with other work, see `pagedkv.engine.threads`). `seed`: for requests without their own.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        dtype: str = "float32",
        num_blocks: int | None = None,
        block_size: int = 16,
        enable_prefix_caching: bool = True,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int | None = None,
        num_threads: int | None = None,
        seed: int = 0,
    ) -> None:
        checkpoint = load_checkpoint(model, dtype)
        self.num_threads = set_num_threads(num_threads)
        self.tokenizer = checkpoint.tokenizer
        if num_blocks is None:
            num_blocks = _default_num_blocks(checkpoint.model, block_size)
        self.engine = Engine(
            checkpoint.model,
            num_blocks,
            block_size,
            enable_prefix_caching,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            tokenizer=checkpoint.tokenizer,
            eos_token_ids=checkpoint.eos_token_ids,
            seed=seed,
        )

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def generate(
        self,
        prompts: Prompt | Seq[Prompt],
        sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """One `RequestOutput` per prompt, in order (a single prompt is a list of one)."""
        token_ids, texts = self._encode_all(prompts)
        return self.engine.generate(token_ids, sampling_params, prompt_texts=texts)

    def stream(
        self,
        prompts: Prompt | Seq[Prompt],
        sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
    ) -> Iterator[StreamOutput]:
        """Yield each sample's new text and tokens as steps produce them; the texts of one sample
        concatenate to its final `CompletionOutput.text`. Stopping the iteration early (break,
        an exception, Ctrl-C) aborts the requests still running, freeing their blocks."""
        token_ids, texts = self._encode_all(prompts)
        ids = self.engine.add_requests(token_ids, sampling_params, prompt_texts=texts)
        position = {request_id: i for i, request_id in enumerate(ids)}
        params = _per_prompt_params(sampling_params, len(ids))
        sent: dict[tuple[int, int], tuple[int, int] | None] = {}  # (request, sample) -> sent so far
        unfinished = set(ids)
        try:
            while unfinished:
                for output in self.engine.step():
                    if output.request_id not in position:
                        continue
                    i = position[output.request_id]
                    yield from _deltas(output, i, _stop_holdback(params[i]), sent)
                    if output.finished:
                        unfinished.discard(output.request_id)
        finally:
            for request_id in unfinished:
                self.engine.abort_request(request_id)

    def add_request(self, prompt: Prompt, sampling_params: SamplingParams | None = None) -> int:
        """Queue one prompt for `step()`; returns its request id."""
        token_ids, text = self.encode(prompt)
        return self.engine.add_request(token_ids, sampling_params, prompt=text)

    def step(self) -> list[RequestOutput]:
        return self.engine.step()

    def abort_request(self, request_id: int) -> RequestOutput | None:
        return self.engine.abort_request(request_id)

    def has_unfinished_requests(self) -> bool:
        return self.engine.has_unfinished_requests()

    def _encode_all(self, prompts: Prompt | Seq[Prompt]) -> tuple[list[Seq[int]], list[str | None]]:
        encoded = [self.encode(p) for p in _as_prompt_list(prompts)]
        return [ids for ids, _ in encoded], [text for _, text in encoded]

    def encode(self, prompt: Prompt) -> tuple[list[int], str | None]:
        """Token ids of a prompt, and its text (None for token ids)."""
        if isinstance(prompt, str):
            return list(self.tokenizer.encode(prompt, add_special_tokens=True)), prompt
        if _is_conversation(prompt):
            if not getattr(self.tokenizer, "chat_template", None):
                raise InvalidPrompt(
                    "chat messages need a chat template, and this tokenizer has none; pass text"
                )
            text = self.tokenizer.apply_chat_template(
                [dict(m) for m in prompt], tokenize=False, add_generation_prompt=True
            )
            return list(self.tokenizer.encode(text, add_special_tokens=False)), text
        return prompt, None  # token ids: checked by the engine


def _as_prompt_list(prompts: Prompt | Seq[Prompt]) -> list[Prompt]:
    if isinstance(prompts, str) or _is_conversation(prompts):
        return [prompts]
    if not isinstance(prompts, Seq):
        raise InvalidPrompt(
            f"prompts must be text, token ids, chat messages or a list of them, got {prompts!r}"
        )
    if prompts and all(isinstance(t, int) for t in prompts):
        return [prompts]
    return list(prompts)


def _is_conversation(prompt: object) -> bool:
    if not isinstance(prompt, Seq) or isinstance(prompt, str) or not prompt:
        return False
    if not all(isinstance(m, Mapping) for m in prompt):
        return False
    for message in prompt:
        if not {"role", "content"} <= set(message):
            raise InvalidPrompt(f"a chat message needs 'role' and 'content', got keys {sorted(message)}")
    return True


def _per_prompt_params(
    params: SamplingParams | Seq[SamplingParams] | None, count: int
) -> list[SamplingParams]:
    if params is None or isinstance(params, SamplingParams):
        return [params or SamplingParams()] * count
    return list(params)


def _stop_holdback(params: SamplingParams) -> int:
    """Characters to hold back while a sample runs: the end of its text could be the start of a stop
    string, which would then be cut from the final text."""
    return max((len(stop) - 1 for stop in params.stop), default=0)


def _deltas(
    output: RequestOutput,
    prompt_index: int,
    stop_holdback: int,
    sent: dict[tuple[int, int], tuple[int, int] | None],
) -> Iterator[StreamOutput]:
    """What each sample of `output` produced since it was last sent; `sent` tracks (tokens, chars)
    sent per sample, None once its final piece went out."""
    for sample in output.outputs:
        key = (output.request_id, sample.index)
        progress = sent.get(key, (0, 0))
        if progress is None:
            continue
        tokens_sent, chars_sent = progress
        finished = sample.finish_reason is not None
        text = sample.text
        if not finished:
            # an incomplete UTF-8 character decodes as U+FFFD and changes when its other bytes arrive
            partial = 1 if text.endswith("\ufffd") else 0
            text = text[: max(chars_sent, len(text) - stop_holdback - partial)]
        new_tokens = sample.token_ids[tokens_sent:]
        new_text = text[chars_sent:]
        if not (new_tokens or new_text or finished):
            continue
        sent[key] = None if finished else (len(sample.token_ids), len(text))
        yield StreamOutput(
            prompt_index, output.request_id, sample.index, new_text, new_tokens, sample.finish_reason
        )


def _default_num_blocks(model: Any, block_size: int) -> int:
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim
    per_token *= model.lm_head.weight.element_size()
    wanted = 16 * config.max_position_embeddings
    tokens = min(wanted, DEFAULT_KV_CACHE_BYTES // per_token)
    if tokens < config.max_position_embeddings // 4:
        raise InvalidArgument(f"the default KV pool holds only {tokens} tokens; pass num_blocks")
    return max(1, tokens // block_size)
