"""Engine greedy tokens/s vs HF batched `generate` and HF continuous batching, at 1 and 2 threads.

Same random-weight model (float32, CPU; one copy per variant, identical seeded weights) and prompts
for all; each generates exactly `--max-tokens` per prompt (EOS disabled):
- pagedkv: `Engine.generate` (continuous batching over the paged cache, Numba decode kernel), a pool
  large enough that nothing is preempted;
- HF batched: one `model.generate` call on the whole left-padded batch (its default DynamicCache);
- HF continuous batching: `model.generate_batch` (transformers' own paged cache and scheduler), its
  manager kept between runs (`persistent_manager=True`) so that its set-up is part of the warm-up;
  twice: with its defaults (pages of 256 tokens, batches of up to 8192 tokens) and with pages of
  `--block-size` tokens and batches of up to 2048 tokens (faster on this CPU). Both get the KV
  budget the engine gets (without `num_blocks` it sizes its cache from free memory, which took
  ~90 s on this machine).

For each thread count, every variant runs once untimed (warm-up, reported apart), then the variants
take turns for `--reps` rounds (the machine is shared: interleaving keeps their conditions alike);
each round gives one engine/HF ratio per variant, and the median over rounds is reported with the
median times. Outputs are compared token by token: the engine against each HF variant.

    .venv/bin/python benchmarks/bench_engine.py
    .venv/bin/python benchmarks/bench_engine.py --threads 1 --reps 5 --family qwen2
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import time
from collections.abc import Callable

import torch
import transformers

from pagedkv.engine import Engine, SamplingParams, random_model
from pagedkv.engine.families import FAMILIES

Outputs = list[list[int]]


def timed(fn: Callable[[], Outputs]) -> tuple[float, Outputs]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def make_variants(
    build_model: Callable[[], torch.nn.Module], prompts: list[list[int]], max_tokens: int, block_size: int
) -> dict[str, Callable[[], Outputs]]:
    """The variants, each on its own copy of the same seeded weights (HF caches one continuous-batching
    manager per model object, so the two HF CB configurations need two objects)."""
    model = build_model()
    num_blocks = sum(-(-(len(p) + max_tokens) // block_size) for p in prompts)
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)

    def engine() -> Outputs:
        e = Engine(model, num_blocks=num_blocks, block_size=block_size, max_num_seqs=len(prompts))
        return [out.outputs[0].token_ids for out in e.generate(prompts, params)]

    longest = max(map(len, prompts))
    ids = torch.tensor([[0] * (longest - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])

    def hf_batched() -> Outputs:
        out = model.generate(
            ids, attention_mask=mask, do_sample=False, max_new_tokens=max_tokens, pad_token_id=0
        )
        return out[:, longest:].tolist()

    tokens = num_blocks * block_size  # the same KV budget for every paged variant
    default_pages = transformers.ContinuousBatchingConfig(num_blocks=-(-tokens // 256))  # page_size 256
    tuned = transformers.ContinuousBatchingConfig(
        page_size=block_size,
        num_blocks=num_blocks,
        max_batch_tokens=2048,
        max_requests_per_batch=len(prompts),
    )
    return {
        "pagedkv engine": engine,
        "HF generate, batched": hf_batched,
        "HF CB, default pages": hf_continuous(build_model(), prompts, max_tokens, default_pages),
        f"HF CB, pages of {block_size}": hf_continuous(build_model(), prompts, max_tokens, tuned),
    }


def hf_continuous(
    model: torch.nn.Module,
    prompts: list[list[int]],
    max_tokens: int,
    config: transformers.ContinuousBatchingConfig,
) -> Callable[[], Outputs]:
    """`generate_batch` with its manager kept between calls (its set-up is then part of the warm-up)."""
    generation = transformers.GenerationConfig(
        max_new_tokens=max_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0
    )

    def run() -> Outputs:
        out = model.generate_batch(
            prompts, generation_config=generation, continuous_batching_config=config, persistent_manager=True
        )
        ordered = sorted(out.values(), key=lambda g: int(g.request_id.rsplit("_", 1)[1]))  # req_<k>
        assert [g.prompt_ids for g in ordered] == prompts
        return [g.generated_tokens for g in ordered]

    return run


def same_tokens(a: Outputs, b: Outputs) -> tuple[int, int, int]:
    """(identical sequences, identical tokens, tokens) of two output lists."""
    seqs = sum(x == y for x, y in zip(a, b, strict=True))
    tokens = sum(p == q for x, y in zip(a, b, strict=True) for p, q in zip(x, y, strict=True))
    return seqs, tokens, sum(map(len, a))


def run(threads: int, variants: dict[str, Callable], reps: int, generated: int) -> None:
    torch.set_num_threads(threads)
    names = list(variants)
    warmup = {name: timed(variants[name])[0] for name in names}
    print(
        f"[{threads} thread(s)] warm-up: " + ", ".join(f"{n} {s:.2f} s" for n, s in warmup.items()),
        flush=True,
    )
    seconds: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, Outputs] = {}
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:  # rotate who goes first
            elapsed, outputs[name] = timed(variants[name])
            seconds[name].append(elapsed)
        print(
            f"[{threads} thread(s)] round {rep + 1}: "
            + ", ".join(f"{n} {s[-1]:.2f} s" for n, s in seconds.items()),
            flush=True,
        )
    engine = names[0]
    print(f"\n{threads} thread(s), {reps} interleaved rounds (median), warm-up excluded:")
    print(f"{'':26} {'seconds':>8} {'tokens/s':>9} {'warm-up s':>10} {'engine speedup':>15}")
    for name in names:
        ratios = [other / mine for other, mine in zip(seconds[name], seconds[engine], strict=True)]
        median = statistics.median(seconds[name])
        print(
            f"{name:26} {median:>8.2f} {generated / median:>9.1f} {warmup[name]:>10.2f} "
            f"{statistics.median(ratios):>14.2f}x  (rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
        )
    for name in names[1:]:
        seqs, tokens, total = same_tokens(outputs[engine], outputs[name])
        print(f"engine vs {name}: {seqs}/{len(outputs[engine])} outputs identical, {tokens}/{total} tokens")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", choices=tuple(FAMILIES), default="llama")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--min-prompt-len", type=int, default=16)
    parser.add_argument("--max-prompt-len", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3, help="interleaved timed rounds per thread count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch intra-op thread counts")
    args = parser.parse_args()
    logging.getLogger("ContinuousBatchingLogger").setLevel(logging.CRITICAL)
    transformers.utils.logging.set_verbosity_error()

    def build_model() -> torch.nn.Module:
        model = random_model(
            args.family,
            vocab_size=args.vocab,
            hidden_size=args.hidden,
            intermediate_size=4 * args.hidden,
            num_layers=args.layers,
            num_heads=args.heads,
            num_kv_heads=args.kv_heads,
            max_position_embeddings=args.max_prompt_len + args.max_tokens,
            dtype=torch.float32,
            seed=args.seed,
        )
        model.generation_config.eos_token_id = None  # every variant generates exactly max_tokens
        return model

    rng = random.Random(args.seed)
    prompts = [
        [rng.randrange(args.vocab) for _ in range(rng.randint(args.min_prompt_len, args.max_prompt_len))]
        for _ in range(args.num_prompts)
    ]
    print(
        f"{args.family}, {args.layers} layers, hidden {args.hidden}, {args.heads}/{args.kv_heads} heads, "
        f"vocab {args.vocab}, float32; {args.num_prompts} prompts of {args.min_prompt_len}-"
        f"{args.max_prompt_len} tokens ({sum(map(len, prompts))} in all), {args.max_tokens} new tokens each; "
        f"torch {torch.__version__}, transformers {transformers.__version__}"
    )
    variants = make_variants(build_model, prompts, args.max_tokens, args.block_size)
    for threads in args.threads:
        run(threads, variants, args.reps, args.num_prompts * args.max_tokens)


if __name__ == "__main__":
    main()
