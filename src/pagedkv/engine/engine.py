"""A small continuous-batching generation engine: HF weights, paged KV, `BlockManager` bookkeeping.

One `step()`: the scheduler reserves slots (preempting if it must) and admits requests; the
manager's copy-on-write list is carried out on the cache; one forward pass runs the new prompts'
tokens and one token per running sequence; each sequence samples its next token; finished
sequences free their blocks. `generate()` is `add_request` for every prompt, then steps until done.

Invariant: the K/V of a sequence lives only in the paged cache, at the slots its block table names;
the engine never keeps a per-sequence tensor between steps.
"""

from __future__ import annotations

import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from pagedkv.block_manager import BlockManager
from pagedkv.engine.errors import PromptTooLong
from pagedkv.engine.model_runner import ModelRunner, StepBatch
from pagedkv.engine.sampler import sample
from pagedkv.engine.scheduler import ScheduleOutput, Scheduler
from pagedkv.engine.sequence import Request, SamplingParams, Sequence
from pagedkv.errors import InvalidArgument, PagedKVError
from pagedkv.tensors import AttentionMetadata


@dataclass
class EngineStats:
    steps: int = 0
    prefill_tokens: int = 0  # prompt (or recomputed) tokens run through the model
    cached_tokens: int = 0  # prompt tokens skipped thanks to the prefix cache
    decode_tokens: int = 0
    generated_tokens: int = 0
    preemptions: int = 0
    forks: int = 0
    cow_copies: int = 0
    peak_usage: float = 0.0  # largest fraction of blocks held after scheduling a step
    forward_seconds: float = 0.0


@dataclass(frozen=True)
class RequestOutput:
    request_id: int
    prompt: list[int]
    outputs: list[list[int]]  # one generated token list per sample


class Engine:
    """Continuous batching over a loaded HF Llama / Mistral / Qwen2 causal LM.

    The cache follows the model's dtype and device. `num_blocks` blocks of `block_size` tokens make
    the pool; `enable_prefix_caching` lets prompts that share full leading blocks skip recomputing them.
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
        self._vocab_size = model.lm_head.weight.shape[0]
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self.eos_token_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
        self._next_request_id = 0
        self._next_seq_id = 0

    @property
    def block_size(self) -> int:
        return self.block_manager.block_size

    def add_request(
        self,
        prompt: Seq[int],
        max_new_tokens: int,
        n: int = 1,
        sampling: SamplingParams | None = None,
        *,
        ignore_eos: bool = False,
    ) -> int:
        """Queue a prompt; returns its request id. Generation stops at `max_new_tokens` or at the
        model's EOS token (kept in the output, as HF does) unless `ignore_eos`."""
        prompt = [int(t) for t in prompt]
        self._validate(prompt, max_new_tokens, n)
        sampling = sampling or SamplingParams()
        request = Request(
            self._next_request_id,
            prompt,
            max_new_tokens,
            n,
            sampling,
            frozenset() if ignore_eos else self.eos_token_ids,
        )
        self._next_request_id += 1
        for index in range(n):
            generator = None
            if not sampling.greedy:
                stream = ((sampling.seed * 1_000_003 + request.request_id) * 1_000_003 + index) % 2**63
                generator = torch.Generator(device=self.cache.device).manual_seed(stream)
            request.seqs.append(
                Sequence(self._next_seq_id, request, index, list(prompt), generator=generator)
            )
            self._next_seq_id += 1
        self.stats.forks += n - 1
        self.scheduler.add(request)
        return request.request_id

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_work

    def step(self) -> list[RequestOutput]:
        """Run one scheduling step and forward pass; returns the requests that finished in it."""
        if not self.scheduler.has_work:
            return []
        out = self.scheduler.schedule()
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
        started = time.perf_counter()
        logits = self.runner.forward(self.cache, batch)
        self.stats.forward_seconds += time.perf_counter() - started
        rows = torch.tensor([row for row, seqs in enumerate(samplers) for _ in seqs], device=logits.device)
        flat = [seq for seqs in samplers for seq in seqs]
        finished: dict[int, Request] = {}
        for seq, token in zip(flat, sample(logits.index_select(0, rows), flat), strict=True):
            seq.num_computed = len(seq.tokens)
            if seq.append_token(token):
                self.scheduler.finish(seq)
                if seq.request.finished:
                    finished[seq.request.request_id] = seq.request
        self.stats.generated_tokens += len(flat)
        return [RequestOutput(r.request_id, r.prompt, r.outputs()) for r in finished.values()]

    def generate(
        self,
        prompts: Seq[Seq[int]],
        max_new_tokens: int,
        n: int = 1,
        *,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        ignore_eos: bool = False,
    ) -> list[list[int]] | list[list[list[int]]]:
        """Generate for every prompt; per prompt the token ids (a list of `n` lists when n > 1).

        Greedy by default; `temperature > 0` samples (seeded, reproducible)."""
        sampling = SamplingParams(temperature, top_k, top_p, seed)
        ids = [self.add_request(p, max_new_tokens, n, sampling, ignore_eos=ignore_eos) for p in prompts]
        results: dict[int, list[list[int]]] = {}
        while self.has_unfinished_requests():
            for output in self.step():
                results[output.request_id] = output.outputs
        return [results[i][0] if n == 1 else results[i] for i in ids]

    def _validate(self, prompt: list[int], max_new_tokens: int, n: int) -> None:
        if not prompt:
            raise InvalidArgument("empty prompt: give at least one token id")
        bad = [t for t in prompt if not 0 <= t < self._vocab_size]
        if bad:
            raise InvalidArgument(
                f"token id {bad[0]} is outside the model's vocabulary 0..{self._vocab_size - 1}"
            )
        if max_new_tokens < 1 or n < 1:
            raise InvalidArgument(f"max_new_tokens ({max_new_tokens}) and n ({n}) must be >= 1")
        if n > self.scheduler.max_num_seqs:
            raise InvalidArgument(f"n={n} samples exceed max_num_seqs={self.scheduler.max_num_seqs}")
        total = len(prompt) + max_new_tokens
        if total > self.runner.max_position:
            raise PromptTooLong(
                f"prompt of {len(prompt)} tokens + max_new_tokens={max_new_tokens} = {total} exceeds the "
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

    def _account(self, out: ScheduleOutput) -> None:
        stats = self.stats
        stats.steps += 1
        stats.preemptions += len(out.preempted)
        stats.cow_copies += len(out.copies)
        stats.decode_tokens += len(out.decodes)
        for prefill in out.prefills:
            stats.cached_tokens += prefill.cached_tokens
            stats.prefill_tokens += len(prefill.seq.tokens) - prefill.start
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
