"""`pagedkv generate`: run the engine on a random-weight model and report tokens/s and block usage.

torch and transformers are imported inside `run` so that `pagedkv --help` works without them.
"""

from __future__ import annotations

import argparse
import random
import time


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate with the paged engine on a random-init Llama/Mistral/Qwen2 model "
        "(needs pagedkv[torch])",
        description="Continuous-batching generation over a paged KV cache, on a model built from a config "
        "with seeded random weights (no download). Prints tokens/s and block usage.",
    )
    model = parser.add_argument_group("model (random weights)")
    # engine.models.FAMILIES spelled out (importing that module needs torch); a test keeps them equal
    model.add_argument("--family", choices=("llama", "mistral", "qwen2"), default="llama")
    model.add_argument("--layers", type=int, default=4)
    model.add_argument("--hidden", type=int, default=256)
    model.add_argument("--heads", type=int, default=8)
    model.add_argument("--kv-heads", type=int, default=2)
    model.add_argument("--vocab", type=int, default=1024)
    model.add_argument("--max-position", type=int, default=1024)
    model.add_argument("--dtype", choices=("float32", "float64", "bfloat16"), default="float32")
    work = parser.add_argument_group("workload")
    work.add_argument("--num-prompts", type=int, default=16)
    work.add_argument("--min-prompt-len", type=int, default=8)
    work.add_argument("--max-prompt-len", type=int, default=96)
    work.add_argument("--shared-prefix", type=int, default=0, help="tokens every prompt starts with")
    work.add_argument("--max-new-tokens", type=int, default=32)
    work.add_argument(
        "-n", type=int, default=1, help="samples per prompt (forked, sharing the prompt's blocks)"
    )
    work.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    work.add_argument("--seed", type=int, default=0)
    cache = parser.add_argument_group("paged cache")
    cache.add_argument("--num-blocks", type=int, default=256)
    cache.add_argument("--block-size", type=int, default=16)
    cache.add_argument("--prefix-caching", action="store_true")
    parser.add_argument(
        "--check", action="store_true", help="compare greedy output with HF generate, prompt by prompt"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from pagedkv.engine import Engine, SamplingParams, random_model

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
    engine = Engine(model, args.num_blocks, args.block_size, enable_prefix_caching=args.prefix_caching)
    sampling = SamplingParams(temperature=args.temperature, seed=args.seed)
    ids = [engine.add_request(p, args.max_new_tokens, args.n, sampling, ignore_eos=True) for p in prompts]
    outputs: dict[int, list[list[int]]] = {}
    started = time.perf_counter()
    while engine.has_unfinished_requests():
        for done in engine.step():
            outputs[done.request_id] = done.outputs
    elapsed = time.perf_counter() - started
    _report(args, engine, prompts, elapsed)
    for request_id in ids[:3]:
        print(
            f"  request {request_id}: {outputs[request_id][0][:12]}"
            f"{' ...' if args.max_new_tokens > 12 else ''}"
        )
    if args.check:
        return _check(args, model, prompts, [outputs[i] for i in ids])
    return 0


def _prompts(args: argparse.Namespace) -> list[list[int]]:
    rng = random.Random(args.seed)
    prefix = [rng.randrange(args.vocab) for _ in range(args.shared_prefix)]
    lengths = [rng.randint(args.min_prompt_len, args.max_prompt_len) for _ in range(args.num_prompts)]
    return [prefix + [rng.randrange(args.vocab) for _ in range(length)] for length in lengths]


def _report(args: argparse.Namespace, engine, prompts: list[list[int]], elapsed: float) -> None:
    stats = engine.stats
    manager = engine.block_manager
    print(
        f"{args.family}: {args.layers} layers, hidden {args.hidden}, "
        f"{args.heads} heads / {args.kv_heads} KV heads, "
        f"{args.dtype}; paged cache {engine.cache.nbytes / 2**20:.2f} MiB = {manager.num_blocks} blocks x "
        f"{manager.block_size} slots"
    )
    print(
        f"{len(prompts)} prompts ({sum(map(len, prompts))} tokens) x n={args.n}: "
        f"{stats.generated_tokens} tokens generated in {elapsed:.2f} s = "
        f"{stats.generated_tokens / elapsed:.1f} tokens/s ({stats.steps} steps)"
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


def _check(args: argparse.Namespace, model, prompts: list[list[int]], outputs: list[list[list[int]]]) -> int:
    import torch

    if args.temperature != 0:
        print("--check compares greedy output only; skipped for temperature > 0")
        return 0
    model.generation_config.eos_token_id = None
    mismatches = 0
    for prompt, samples in zip(prompts, outputs, strict=True):
        ids = torch.tensor([prompt])
        ref = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=args.max_new_tokens
        )
        mismatches += sum(sample != ref[0, len(prompt) :].tolist() for sample in samples)
    print(
        f"check against HF generate: {len(prompts) * args.n - mismatches}/{len(prompts) * args.n} identical"
    )
    return 1 if mismatches else 0
