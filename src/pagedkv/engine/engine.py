"""A continuous-batching generation engine: HF weights, paged KV, `BlockManager` bookkeeping.

One `step()`: the scheduler reserves slots (preempting if it must) and admits requests; the
manager's copy-on-write list is carried out on the cache; one forward pass runs the new prompts'
tokens and one token per running sequence; each sequence samples its next token; finished
sequences free their blocks. `generate()` is `add_request` for every prompt, then steps until done.
`abort_request` ends a request at any point and frees its blocks at once.

Invariants: the K/V of a sequence lives only in the paged cache, at the slots its block table names;
the engine never keeps a per-sequence tensor between steps. A call that fails leaves the engine as
if it had not been made: `add_request` and `generate` validate everything before queueing anything,
a step that raises aborts the requests it was running (their blocks are freed, and the prefix cache,
which may name blocks whose K/V the step never wrote, is reset) before re-raising,
and `generate` aborts every request it queued if it is interrupted, so the next call starts clean.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

import torch

from pagedkv.block_manager import BlockManager
from pagedkv.engine.detokenizer import Detokenizer
from pagedkv.engine.errors import InvalidPrompt, PromptTooLong
from pagedkv.engine.model_runner import ModelRunner, StepBatch
from pagedkv.engine.request_output import RequestOutput
from pagedkv.engine.sampler import sample
from pagedkv.engine.sampling_params import SamplingParams
from pagedkv.engine.scheduler import ScheduleOutput, Scheduler
from pagedkv.engine.sequence import Request, Sequence
from pagedkv.errors import InvalidArgument, PagedKVError
from pagedkv.tensors import AttentionMetadata


@dataclass
class EngineStats:
    steps: int = 0
    prefill_tokens: int = 0  # prompt (or recomputed) tokens run through the model
    cached_tokens: int = 0  # prompt tokens skipped thanks to the prefix cache
    generated_tokens: int = 0
    preemptions: int = 0
    forks: int = 0
    cow_copies: int = 0
    peak_usage: float = 0.0  # largest fraction of blocks held after scheduling a step


class Engine:
    """Continuous batching over a loaded HF causal LM of a supported family (`families.FAMILIES`).

    The cache follows the model's dtype and device. `num_blocks` blocks of `block_size` tokens make
    the pool; `enable_prefix_caching` lets prompts that share full leading blocks skip recomputing
    them. `tokenizer` (optional) decodes outputs into text and enables stop strings; without it
    outputs carry token ids only. `eos_token_ids` default to the model's `generation_config`.
    `seed` seeds the samples of requests whose `SamplingParams.seed` is None.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        num_blocks: int,
        block_size: int = 16,
        enable_prefix_caching: bool = False,
        *,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int | None = None,
        tokenizer: Any = None,
        eos_token_ids: Seq[int] | None = None,
        seed: int = 0,
    ) -> None:
        if max_num_seqs <= 0 or (max_num_batched_tokens is not None and max_num_batched_tokens <= 0):
            raise InvalidArgument(
                f"max_num_seqs ({max_num_seqs}) and max_num_batched_tokens ({max_num_batched_tokens}) "
                "must be positive"
            )
        self.runner = ModelRunner(model)
        self.block_manager = BlockManager(num_blocks, block_size, enable_prefix_caching=enable_prefix_caching)
        self.cache = self.runner.make_cache(num_blocks, block_size)
        self.scheduler = Scheduler(self.block_manager, max_num_seqs, max_num_batched_tokens)
        self.stats = EngineStats()
        self.detokenizer = Detokenizer(tokenizer) if tokenizer is not None else None
        self.vocab_size = model.lm_head.weight.shape[0]
        if eos_token_ids is None:
            eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
            eos_token_ids = [eos] if isinstance(eos, int) else (eos or [])
        self.eos_token_ids = frozenset(eos_token_ids)
        self.seed = seed
        self._requests: dict[int, Request] = {}
        self._next_request_id = 0
        self._next_seq_id = 0

    @property
    def block_size(self) -> int:
        return self.block_manager.block_size

    def add_request(
        self, prompt_token_ids: Seq[int], params: SamplingParams | None = None, *, prompt: str | None = None
    ) -> int:
        """Queue a prompt of token ids; returns its request id. Nothing is queued if it is refused.

        `prompt`: the text the ids came from, echoed in the outputs."""
        params = params if params is not None else SamplingParams()
        tokens = self.check_prompt(prompt_token_ids, params)
        request = Request(
            self._next_request_id,
            tokens,
            params,
            frozenset() if params.ignore_eos else self.eos_token_ids,
            prompt=prompt,
        )
        self._next_request_id += 1
        for index in range(params.n):
            request.seqs.append(
                Sequence(self._next_seq_id, request, list(tokens), generator=self._generator(request, index))
            )
            if params.logprobs is not None:
                request.seqs[-1].logprobs = []
            self._next_seq_id += 1
        self.stats.forks += params.n - 1
        self._requests[request.request_id] = request
        self.scheduler.add(request)
        return request.request_id

    def abort_request(self, request_id: int) -> RequestOutput | None:
        """End a request now (its unfinished samples get finish_reason "abort") and free its blocks.
        Returns its final output, or None if it is not in the engine (unknown or already finished)."""
        request = self._requests.pop(request_id, None)
        if request is None:
            return None
        for seq in self.scheduler.abort(request):
            seq.finish("abort")
        request.metrics.finished_time = time.perf_counter()
        return RequestOutput.of(request)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_work

    def step(self) -> list[RequestOutput]:
        """Run one scheduling step and forward pass; returns an output for every request that got
        tokens in it (`finished` tells which ended). If the step raises, the requests it was running
        are aborted, so their blocks are free again, and the error propagates."""
        if not self.scheduler.has_work:
            return []
        out = self.scheduler.schedule()
        try:
            return self._run(out)
        except BaseException:
            touched = {p.seq.request.request_id for p in out.prefills}
            touched |= {seq.request.request_id for seq in out.decodes}
            for request_id in touched:
                self.abort_request(request_id)
            # blocks published to the prefix cache in this step may never have had their K/V
            # written; every running sequence was in the step, so none is alive now and the
            # cache can be forgotten (refused only if one were, which would be a bug)
            if not self.block_manager.reset_prefix_cache():
                raise PagedKVError("internal error: a sequence outlived the failed step") from None
            raise

    def generate(
        self,
        prompts: Seq[Seq[int]],
        params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        prompt_texts: Seq[str | None] | None = None,
    ) -> list[RequestOutput]:
        """Generate for every prompt (lists of token ids); one `RequestOutput` per prompt, in order,
        each with `params.n` samples. `params` is one `SamplingParams` for all or one per prompt.

        All prompts are checked before any is queued; if anything fails (or Ctrl-C) every request of
        this call is aborted before the error propagates."""
        ids = self.add_requests(prompts, params, prompt_texts=prompt_texts)
        results: dict[int, RequestOutput] = {}
        try:
            while len(results) < len(ids):
                if not self.scheduler.has_work:  # a request of this call was aborted from outside
                    raise PagedKVError("generate(): a request was aborted before it finished")
                for output in self.step():
                    if output.finished:
                        results[output.request_id] = output
        except BaseException:
            for request_id in ids:
                self.abort_request(request_id)
            raise
        return [results[i] for i in ids]

    def add_requests(
        self,
        prompts: Seq[Seq[int]],
        params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        prompt_texts: Seq[str | None] | None = None,
    ) -> list[int]:
        """`add_request` for every prompt, all or none: every prompt is checked before any is queued."""
        if isinstance(prompts, str | bytes):
            raise InvalidPrompt("takes a list of prompts (lists of token ids), got a str")
        per_prompt = _per_prompt(params, len(prompts))
        texts = list(prompt_texts) if prompt_texts is not None else [None] * len(prompts)
        for prompt, p in zip(prompts, per_prompt, strict=True):
            self.check_prompt(prompt, p)
        return [
            self.add_request(prompt, p, prompt=text)
            for prompt, p, text in zip(prompts, per_prompt, texts, strict=True)
        ]

    def check_prompt(self, prompt_token_ids: object, params: SamplingParams) -> list[int]:
        """The prompt as a list of ints, or a typed error saying why the engine cannot run it."""
        if not isinstance(params, SamplingParams):
            raise InvalidArgument(f"sampling params must be a SamplingParams, got {type(params).__name__}")
        tokens = _token_ids(prompt_token_ids)
        bad = [t for t in tokens if not 0 <= t < self.vocab_size]
        if bad:
            raise InvalidPrompt(
                f"token id {bad[0]} is outside the model's vocabulary 0..{self.vocab_size - 1}"
            )
        if params.n > self.scheduler.max_num_seqs:
            raise InvalidArgument(f"n={params.n} samples exceed max_num_seqs={self.scheduler.max_num_seqs}")
        if params.stop and self.detokenizer is None:
            raise InvalidArgument("stop strings need a tokenizer: build the Engine with tokenizer=...")
        total = len(tokens) + params.max_tokens
        if total > self.runner.max_position:
            raise PromptTooLong(
                f"prompt of {len(tokens)} tokens + max_tokens={params.max_tokens} = {total} exceeds the "
                f"model's max_position_embeddings={self.runner.max_position}; shorten the prompt or "
                "generate fewer tokens"
            )
        # the most a sequence ever holds: its last generated token is sampled, never stored
        needed = -(-(total - 1) // self.block_size)
        if needed > self.block_manager.num_blocks:
            raise PromptTooLong(
                f"one sequence of {total - 1} tokens needs {needed} blocks of {self.block_size} but the "
                f"pool has {self.block_manager.num_blocks}; raise num_blocks"
            )
        return tokens

    def _generator(self, request: Request, index: int) -> torch.Generator | None:
        """Sample `index` of `request` draws from its own stream: the request's seed if it has one,
        else the engine's seed and the request id; so batch mates and preemptions change nothing."""
        if request.params.greedy:
            return None
        if request.params.seed is not None:
            stream = request.params.seed * 1_000_003 + index
        else:
            stream = (self.seed * 1_000_003 + request.request_id) * 1_000_003 + index
        return torch.Generator(device=self.cache.device).manual_seed(stream % 2**63)

    def _run(self, out: ScheduleOutput) -> list[RequestOutput]:
        if out.empty:
            # unreachable while every request fits the pool alone (checked in add_request); a guard
            # so that generate() fails loudly instead of looping forever
            raise PagedKVError(
                f"internal error: the scheduler can run nothing ({len(self.scheduler.waiting)} waiting, "
                f"{self.block_manager.num_free_blocks}/{self.block_manager.num_blocks} blocks free); "
                "please report it with the requests that led here"
            )
        self._account(out)
        self.cache.copy_blocks(out.copies)
        batch, samplers = self._build_batch(out)
        logits = self.runner.forward(self.cache, batch)
        rows = torch.tensor([row for row, seqs in enumerate(samplers) for _ in seqs], device=logits.device)
        flat = [seq for seqs in samplers for seq in seqs]
        sampled = sample(logits.index_select(0, rows), flat)
        now = time.perf_counter()
        changed: dict[int, Request] = {}
        for seq, choice in zip(flat, sampled, strict=True):
            seq.num_computed = len(seq.tokens)
            self._append(seq, choice.token, choice.logprobs)
            if seq.finish_reason is not None:
                self.scheduler.finish(seq)
            changed[seq.request.request_id] = seq.request
        self.stats.generated_tokens += len(flat)
        for request in changed.values():
            metrics = request.metrics
            if metrics.first_token_time is None:
                metrics.first_token_time = now
            metrics.last_token_time = now
            if request.finished:
                metrics.finished_time = now
                del self._requests[request.request_id]
        return [RequestOutput.of(request) for request in changed.values()]

    def _append(self, seq: Sequence, token: int, logprobs: dict[int, float] | None) -> None:
        seq.append_token(token)
        if logprobs is not None and seq.logprobs is not None:
            seq.logprobs.append(logprobs)
            seq.cumulative_logprob += logprobs[token]
        if self.detokenizer is not None:
            stop = self.detokenizer.update(seq)
            if stop is not None and seq.finish_reason in (None, "length"):
                seq.finish("stop", stop)

    def _account(self, out: ScheduleOutput) -> None:
        stats = self.stats
        stats.steps += 1
        stats.preemptions += len(out.preempted)
        stats.cow_copies += len(out.copies)
        for prefill in out.prefills:
            stats.cached_tokens += prefill.cached_tokens
            stats.prefill_tokens += len(prefill.seq.tokens) - prefill.start
            request = prefill.seq.request
            if request.num_cached_tokens is None:
                request.num_cached_tokens = prefill.cached_tokens
        stats.peak_usage = max(stats.peak_usage, self.block_manager.usage)

    def _build_batch(self, out: ScheduleOutput) -> tuple[StepBatch, list[list[Sequence]]]:
        """Pack prefill tokens then decode tokens; map each stored token to its slot (t // B, t % B)."""
        size = self.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        write_rows: list[int] = []
        slots: list[int] = []
        tables: list[list[int]] = []
        contexts: list[int] = []
        queries: list[int] = []
        logits_rows: list[int] = []
        samplers: list[list[Sequence]] = []
        work = [(p.seq, p.start, p.write_start, p.samplers) for p in out.prefills]
        work += [(seq, len(seq.tokens) - 1, len(seq.tokens) - 1, [seq]) for seq in out.decodes]
        for seq, start, write_start, seqs in work:
            table = self.block_manager.block_table(seq.seq_id)
            for pos in range(start, len(seq.tokens)):
                if pos >= write_start:
                    write_rows.append(len(input_ids))
                    slots.append(table[pos // size] * size + pos % size)
                input_ids.append(seq.tokens[pos])
                positions.append(pos)
            tables.append(table)
            contexts.append(len(seq.tokens))
            queries.append(len(seq.tokens) - start)
            logits_rows.append(len(input_ids) - 1)
            samplers.append(seqs)
        device = self.cache.device

        def as_tensor(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long, device=device)

        batch = StepBatch(
            input_ids=as_tensor(input_ids),
            positions=as_tensor(positions),
            write_rows=None if len(write_rows) == len(input_ids) else as_tensor(write_rows),
            slot_mapping=as_tensor(slots),
            metadata=AttentionMetadata.build(tables, contexts, queries, key_cache=self.cache.key_cache(0)),
            logits_rows=as_tensor(logits_rows),
        )
        return batch, samplers


def _per_prompt(params: SamplingParams | Seq[SamplingParams] | None, count: int) -> list[SamplingParams]:
    if params is None or isinstance(params, SamplingParams):
        return [params or SamplingParams()] * count
    params = list(params)
    if len(params) != count:
        raise InvalidArgument(
            f"{len(params)} SamplingParams for {count} prompts; give one, or one per prompt"
        )
    return params


def _token_ids(prompt: object) -> list[int]:
    """A prompt as a list of Python ints; `str`, floats, bools and the like are refused by type."""
    if isinstance(prompt, str | bytes):
        raise InvalidPrompt(
            "a prompt here is a list of token ids, got a str; tokenize it first, or use pagedkv.LLM, "
            "which takes text"
        )
    if hasattr(prompt, "ndim") and hasattr(prompt, "tolist"):  # a torch tensor or a NumPy array
        if prompt.ndim != 1:
            raise InvalidPrompt(f"a prompt array must be 1-D, got {prompt.ndim} dimensions")
        prompt = prompt.tolist()
    if not isinstance(prompt, Seq):
        raise InvalidPrompt(f"a prompt is a list of token ids, got {type(prompt).__name__}")
    tokens = list(prompt)
    for token in tokens:
        if isinstance(token, bool) or not isinstance(token, numbers.Integral):
            raise InvalidPrompt(f"token ids must be ints, got {token!r} ({type(token).__name__})")
    if not tokens:
        raise InvalidPrompt("empty prompt: give at least one token id")
    return [int(token) for token in tokens]
