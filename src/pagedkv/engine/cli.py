"""`pagedkv generate`: text from a local checkpoint (`--model DIR`), or a benchmark on random weights.

- With `--model DIR`: loads the checkpoint (`pagedkv.LLM`), runs every `--prompt` and streams the
  text to the terminal as it is produced (one prompt, n = 1), or prints each completion when it ends.
- Without it: builds a random-weight model from `--family` and the size options, runs a seeded
  random workload and reports tokens/s (warm-up excluded and reported apart), block usage, prefix
  hits, preemptions; `--check` compares greedy output with HF `generate`.

Every option is checked before torch is imported (one line naming the flag, exit 2), including the
KV pool's size against the memory free now. torch and transformers are imported inside `run`, so
`pagedkv --help` works without them.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pagedkv.engine.families import FAMILIES
from pagedkv.errors import PagedKVError, UsageError
from pagedkv.options import Formatter
from pagedkv.tensors.errors import InsufficientMemory
from pagedkv.tensors.memory import check_fits_in_memory, kv_cache_bytes

DTYPE_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2}
RANDOM_MODEL_FLAGS = ("family", "layers", "hidden", "heads", "kv_heads", "vocab", "max_position")
WORKLOAD_FLAGS = ("num_prompts", "min_prompt_len", "max_prompt_len", "shared_prefix", "check")


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate text from a local checkpoint (--model DIR), or benchmark the paged engine on a "
        "random-weight model (needs pagedkv[torch])",
        description="Continuous-batching generation over a paged KV cache. With --model DIR: text from a "
        "local Hugging Face checkpoint, streamed to the terminal. Without it: a model built from a "
        "config with seeded random weights (no download), a random workload, tokens/s and block usage.",
        formatter_class=Formatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="local Hugging Face checkpoint folder (nothing is downloaded)",
    )
    model.add_argument("--dtype", choices=tuple(DTYPE_BYTES), default="float32", help="weights and KV cache")
    model.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch intra-op threads; default: one per core not busy with other work (cores minus the "
        "1-minute load average, at least 1): on a busy machine a second thread slows small decode "
        "matmuls down",
    )
    rand = parser.add_argument_group("random-weight model (without --model)")
    rand.add_argument("--family", choices=tuple(FAMILIES), default="llama", help="architecture")
    rand.add_argument("--layers", type=int, default=4, help="decoder layers")
    rand.add_argument("--hidden", type=int, default=256, help="hidden size (MLP: 2x)")
    rand.add_argument("--heads", type=int, default=8, help="query heads (must divide --hidden)")
    rand.add_argument("--kv-heads", type=int, default=2, help="KV heads (must divide --heads)")
    rand.add_argument("--vocab", type=int, default=1024, help="vocabulary size")
    rand.add_argument("--max-position", type=int, default=1024, help="max_position_embeddings")
    prompts = parser.add_argument_group("prompts")
    prompts.add_argument(
        "--prompt", action="append", metavar="TEXT", help="prompt text (repeat for several; needs --model)"
    )
    prompts.add_argument("--chat", action="store_true", help="send each --prompt as a user chat message")
    prompts.add_argument("--num-prompts", type=int, default=16, help="random prompts (without --model)")
    prompts.add_argument("--min-prompt-len", type=int, default=8, help="random prompt length, at least")
    prompts.add_argument("--max-prompt-len", type=int, default=96, help="random prompt length, at most")
    prompts.add_argument(
        "--shared-prefix", type=int, default=0, help="tokens every random prompt starts with"
    )
    sampling = parser.add_argument_group("sampling (pagedkv.SamplingParams, vLLM's names)")
    sampling.add_argument("--max-tokens", type=int, default=32, help="tokens to generate per sample, at most")
    sampling.add_argument("--min-tokens", type=int, default=0, help="tokens before EOS / stops may end it")
    sampling.add_argument(
        "-n", "--n", type=int, default=1, help="samples per prompt (forked, sharing its blocks)"
    )
    sampling.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    sampling.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    sampling.add_argument("--top-k", type=int, default=0, help="most likely tokens kept (0 = off)")
    sampling.add_argument(
        "--min-p", type=float, default=0.0, help="min probability relative to the top (0 = off)"
    )
    sampling.add_argument("--repetition-penalty", type=float, default=1.0, help="1 = off")
    sampling.add_argument(
        "--stop", action="append", metavar="TEXT", help="stop string (repeat for several; needs --model)"
    )
    sampling.add_argument(
        "--ignore-eos", action="store_true", help="generate past EOS (random weights: always)"
    )
    sampling.add_argument("--seed", type=int, default=0, help="sampling seed (and random weights / prompts)")
    cache = parser.add_argument_group("paged cache")
    cache.add_argument(
        "--num-blocks",
        type=int,
        help="KV blocks in the pool; default: 256 (random weights), sized to the model",
    )
    cache.add_argument("--block-size", type=int, default=16, help="tokens per block")
    cache.add_argument(
        "--enable-prefix-caching",
        "--prefix-caching",
        dest="enable_prefix_caching",
        action="store_true",
        help="reuse KV blocks of shared prompt prefixes (always on with --model)",
    )
    cache.add_argument("--max-num-seqs", type=int, default=256, help="sequences running at once, at most")
    parser.add_argument(
        "--check", action="store_true", help="random weights: compare greedy output with HF generate"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    validate(args)
    from pagedkv.engine.threads import set_num_threads

    threads = set_num_threads(args.threads)
    if args.model is not None:
        return _run_checkpoint(args, threads)
    return _run_random(args, threads)


# ------------------------------------------------------------------------------------- validation


def validate(args: argparse.Namespace) -> None:
    """Every check that needs no torch; `UsageError` naming the flag."""
    parser_defaults = _defaults()
    _positive(args, "max_tokens", "n", "block_size", "max_num_seqs")
    if args.threads is not None:
        _positive(args, "threads")
    if args.num_blocks is not None:
        _positive(args, "num_blocks")
    if args.min_tokens > args.max_tokens:
        raise UsageError(f"--min-tokens {args.min_tokens} exceeds --max-tokens {args.max_tokens}")
    _sampling_params(args)  # SamplingParams' own checks, reported under the flag's name
    if args.n > args.max_num_seqs:
        raise UsageError(f"--n {args.n} exceeds --max-num-seqs {args.max_num_seqs}")
    if args.model is not None:
        given = [f for f in RANDOM_MODEL_FLAGS + WORKLOAD_FLAGS if getattr(args, f) != parser_defaults[f]]
        if given:
            raise UsageError(f"{_flag(given[0])} applies to random weights only; drop it or drop --model")
        if not args.prompt:
            raise UsageError("--model needs at least one --prompt")
        if args.enable_prefix_caching:
            raise UsageError("--enable-prefix-caching is always on with --model; drop it")
        from pagedkv.engine.checkpoint import inspect_checkpoint

        try:
            files = inspect_checkpoint(args.model)
        except PagedKVError as exc:
            raise UsageError(f"--model {exc}") from None
        if args.num_blocks is not None:
            config = files.config
            head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
            kv_heads = config.get("num_key_value_heads") or config["num_attention_heads"]
            sizes = (config["num_hidden_layers"], args.num_blocks, args.block_size, kv_heads, head_dim)
            stored_size = DTYPE_BYTES.get(str(config.get("torch_dtype") or config.get("dtype")), 4)
            weights = (
                sum(f.stat().st_size for f in files.weight_files) * DTYPE_BYTES[args.dtype] // stored_size
            )
            _check_memory(
                kv_cache_bytes(*sizes, DTYPE_BYTES[args.dtype]) + weights, args.num_blocks, "--dtype"
            )
    else:
        for flag in ("prompt", "stop"):
            if getattr(args, flag):
                raise UsageError(f"--{flag} needs --model (random weights have no tokenizer)")
        if args.chat:
            raise UsageError("--chat needs --model")
        _validate_random_model(args)
    if args.model is None:
        _check_kv_memory(args)


def _validate_random_model(args: argparse.Namespace) -> None:
    _positive(args, "layers", "hidden", "heads", "kv_heads", "vocab", "max_position", "num_prompts")
    _positive(args, "min_prompt_len", "max_prompt_len")
    if args.hidden % args.heads:
        raise UsageError(f"--heads {args.heads} must divide --hidden {args.hidden}")
    if (args.hidden // args.heads) % 2:
        raise UsageError(f"--hidden / --heads = {args.hidden // args.heads} must be even (rotary embeddings)")
    if args.heads % args.kv_heads:
        raise UsageError(f"--kv-heads {args.kv_heads} must divide --heads {args.heads}")
    if args.min_prompt_len > args.max_prompt_len:
        raise UsageError(
            f"--min-prompt-len {args.min_prompt_len} exceeds --max-prompt-len {args.max_prompt_len}"
        )
    if args.shared_prefix < 0:
        raise UsageError(f"--shared-prefix must be >= 0, got {args.shared_prefix}")
    longest = args.shared_prefix + args.max_prompt_len + args.max_tokens
    if longest > args.max_position:
        raise UsageError(
            f"--shared-prefix + --max-prompt-len + --max-tokens = {longest} exceeds --max-position "
            f"{args.max_position}"
        )
    blocks = -(-(longest - 1) // args.block_size)
    if args.num_blocks is not None and blocks > args.num_blocks:
        raise UsageError(
            f"--num-blocks {args.num_blocks} cannot hold one sequence of {longest - 1} tokens "
            f"({blocks} blocks of --block-size {args.block_size})"
        )


def _check_kv_memory(args: argparse.Namespace) -> None:
    head_dim = args.hidden // args.heads
    size = DTYPE_BYTES[args.dtype]
    num_blocks = args.num_blocks or 256
    kv = kv_cache_bytes(args.layers, num_blocks, args.block_size, args.kv_heads, head_dim, size)
    # embeddings + lm_head + per layer q, k, v, o and a 2x MLP
    weights = size * (2 * args.vocab * args.hidden + args.layers * (8 * args.hidden**2))
    _check_memory(kv + weights, num_blocks, "the model size")


def _check_memory(nbytes: int, num_blocks: int, other: str) -> None:
    """`UsageError` naming --num-blocks when the KV pool (and weights) exceed the memory free now."""
    try:
        check_fits_in_memory(nbytes, f"--num-blocks {num_blocks:,} (KV cache) plus the weights", "")
    except InsufficientMemory as exc:
        raise UsageError(f"{str(exc).rstrip('; ')}; lower --num-blocks or {other}") from None


def _positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value < 1:
            raise UsageError(f"{_flag(name)} must be >= 1, got {value}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _sampling_params(args: argparse.Namespace) -> Any:
    from pagedkv.engine.sampling_params import SamplingParams

    fields = {
        "n": args.n,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "min_p": args.min_p,
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "min_tokens": args.min_tokens,
        "stop": args.stop or [],
        "ignore_eos": args.ignore_eos or args.model is None,
        "repetition_penalty": args.repetition_penalty,
    }
    try:
        return SamplingParams(**fields)
    except PagedKVError as exc:
        message = str(exc)
        name = next((f for f in fields if message.startswith(f)), None)
        if name is None:
            raise UsageError(message) from None
        raise UsageError(_flag(name) + message[len(name) :]) from None


def _defaults() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers())
    sub = parser._subparsers._group_actions[0].choices["generate"]  # type: ignore[union-attr]
    return {action.dest: action.default for action in sub._actions}


# ------------------------------------------------------------------------------------- checkpoint


def _run_checkpoint(args: argparse.Namespace, threads: int) -> int:
    import transformers

    from pagedkv.engine.llm import LLM

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    llm = LLM(
        args.model,
        dtype=args.dtype,
        num_blocks=args.num_blocks,
        block_size=args.block_size,
        max_num_seqs=args.max_num_seqs,
        num_threads=threads,
        seed=args.seed,
    )
    params = _sampling_params(args)
    prompts: list[Any] = [[{"role": "user", "content": p}] if args.chat else p for p in args.prompt]
    live = len(prompts) == 1 and args.n == 1
    texts: dict[tuple[int, int], list[str]] = {}
    started = time.perf_counter()
    generated = 0
    for piece in llm.stream(prompts, params):
        generated += len(piece.token_ids)
        if live:
            _write(piece.text)
            if piece.finish_reason is not None:
                _write("\n")
            continue
        texts.setdefault((piece.prompt_index, piece.index), []).append(piece.text)
        if piece.finish_reason is not None:
            label = f"[prompt {piece.prompt_index}" + (f", sample {piece.index}]" if args.n > 1 else "]")
            print(f"{label} {''.join(texts.pop((piece.prompt_index, piece.index)))}")
    elapsed = time.perf_counter() - started
    print(
        f"{generated} tokens in {elapsed:.2f} s ({generated / elapsed:.1f} tokens/s, {threads} threads)",
        file=sys.stderr,
    )
    return 0


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# ------------------------------------------------------------------------------------- random weights


def _run_random(args: argparse.Namespace, threads: int) -> int:
    import torch

    from pagedkv.engine import Engine, random_model
    from pagedkv.progress import Progress

    model = random_model(
        args.family,
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=2 * args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        num_kv_heads=args.kv_heads,
        max_position_embeddings=args.max_position,
        dtype=getattr(torch, args.dtype),
        seed=args.seed,
    )
    prompts = _prompts(args)
    params = _sampling_params(args)

    def make_engine() -> Engine:
        return Engine(
            model,
            args.num_blocks or 256,
            args.block_size,
            enable_prefix_caching=args.enable_prefix_caching,
            max_num_seqs=args.max_num_seqs,
            seed=args.seed,
        )

    warmup = _timed(lambda: make_engine().generate(prompts[:1], params))
    engine = make_engine()
    total = len(prompts) * args.n * args.max_tokens
    with Progress(total, "generate", "tok") as progress:
        ids = engine.add_requests(prompts, params)
        outputs: dict[int, Any] = {}
        started = time.perf_counter()
        while engine.has_unfinished_requests():
            before = engine.stats.generated_tokens
            for out in engine.step():
                if out.finished:
                    outputs[out.request_id] = out
            progress.update(engine.stats.generated_tokens - before)
        elapsed = time.perf_counter() - started
    _report(args, engine, prompts, elapsed, warmup, threads)
    for request_id in ids[:3]:
        tokens = outputs[request_id].outputs[0].token_ids
        print(f"  request {request_id}: {tokens[:12]}{' ...' if len(tokens) > 12 else ''}")
    if args.check:
        return _check(args, model, prompts, [outputs[i] for i in ids])
    return 0


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _prompts(args: argparse.Namespace) -> list[list[int]]:
    rng = random.Random(args.seed)
    prefix = [rng.randrange(args.vocab) for _ in range(args.shared_prefix)]
    lengths = [rng.randint(args.min_prompt_len, args.max_prompt_len) for _ in range(args.num_prompts)]
    return [prefix + [rng.randrange(args.vocab) for _ in range(length)] for length in lengths]


def _report(
    args: argparse.Namespace,
    engine: Any,
    prompts: list[list[int]],
    elapsed: float,
    warmup: float,
    threads: int,
) -> None:
    stats = engine.stats
    manager = engine.block_manager
    print(
        f"{args.family}: {args.layers} layers, hidden {args.hidden}, "
        f"{args.heads} heads / {args.kv_heads} KV heads, "
        f"{args.dtype}; paged cache {engine.cache.nbytes / 2**20:.2f} MiB = {manager.num_blocks} blocks x "
        f"{manager.block_size} slots; {threads} threads"
    )
    print(
        f"{len(prompts)} prompts ({sum(map(len, prompts))} tokens) x n={args.n}: "
        f"{stats.generated_tokens} tokens generated in {elapsed:.2f} s = "
        f"{stats.generated_tokens / elapsed:.1f} tokens/s ({stats.steps} steps); "
        f"warm-up (first prompt alone, not counted) {warmup:.2f} s"
    )
    peak = stats.peak_usage
    print(
        f"block usage: peak {peak:.0%} ({round(peak * manager.num_blocks)}/{manager.num_blocks} blocks, "
        f"{peak * engine.cache.nbytes / 2**20:.2f} MiB of K/V), after the run {manager.usage:.0%}"
    )
    print(
        f"prefill tokens {stats.prefill_tokens}, served from the prefix cache {stats.cached_tokens} "
        f"(hit rate {manager.stats.hit_rate:.0%}), preemptions {stats.preemptions}, forks {stats.forks}, "
        f"copy-on-write copies {stats.cow_copies}"
    )


def _check(args: argparse.Namespace, model: Any, prompts: list[list[int]], outputs: list[Any]) -> int:
    import torch

    if args.temperature != 0:
        print("--check compares greedy output only; skipped for --temperature > 0")
        return 0
    model.generation_config.eos_token_id = None
    mismatches = 0
    for prompt, output in zip(prompts, outputs, strict=True):
        ids = torch.tensor([prompt])
        ref = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=args.max_tokens
        )
        mismatches += sum(s.token_ids != ref[0, len(prompt) :].tolist() for s in output.outputs)
    print(
        f"check against HF generate: {len(prompts) * args.n - mismatches}/{len(prompts) * args.n} identical"
    )
    return 1 if mismatches else 0
