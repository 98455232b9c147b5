"""Engine greedy tokens/s vs HF `generate` on the same random-weight model and prompts.

Both generate exactly `max_new_tokens` per prompt (EOS disabled) in float32 on the CPU. HF runs two
ways: all prompts in one `generate` call (left-padded batch, its default DynamicCache: the fairest
batched comparison), and one prompt at a time (no padding waste). The engine gets a pool large
enough that nothing is preempted, and runs continuous batching over all prompts. Each side runs
once untimed first (warm-up), then is timed over `--reps` runs (best wall time kept).

    .venv/bin/python benchmarks/bench_engine.py
    .venv/bin/python benchmarks/bench_engine.py --num-prompts 16 --max-new-tokens 32 --layers 2
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import torch

from pagedkv.engine import Engine, random_model
from pagedkv.engine.models import FAMILIES


def best_seconds(fn: Callable[[], object], reps: int) -> tuple[float, object]:
    result = fn()
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def hf_batched(model, prompts: list[list[int]], max_new_tokens: int, pad_id: int) -> list[list[int]]:
    longest = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (longest - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(
        ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad_id
    )
    return out[:, longest:].tolist()


def hf_one_by_one(model, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    outputs = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens
        )
        outputs.append(out[0, len(prompt) :].tolist())
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", choices=FAMILIES, default="llama")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--min-prompt-len", type=int, default=16)
    parser.add_argument("--max-prompt-len", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = random_model(
        args.family,
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        num_kv_heads=args.kv_heads,
        max_position_embeddings=args.max_prompt_len + args.max_new_tokens,
        dtype=torch.float32,
        seed=args.seed,
    )
    model.generation_config.eos_token_id = None  # both sides generate exactly max_new_tokens
    rng = random.Random(args.seed)
    prompts = [
        [rng.randrange(args.vocab) for _ in range(rng.randint(args.min_prompt_len, args.max_prompt_len))]
        for _ in range(args.num_prompts)
    ]
    generated = args.num_prompts * args.max_new_tokens
    num_blocks = sum(-(-(len(p) + args.max_new_tokens) // args.block_size) for p in prompts)

    def engine_run() -> list[list[int]]:
        engine = Engine(
            model, num_blocks=num_blocks, block_size=args.block_size, max_num_seqs=args.num_prompts
        )
        return engine.generate(prompts, args.max_new_tokens)

    engine_s, engine_out = best_seconds(engine_run, args.reps)
    batched_s, _ = best_seconds(lambda: hf_batched(model, prompts, args.max_new_tokens, 0), args.reps)
    single_s, single_out = best_seconds(lambda: hf_one_by_one(model, prompts, args.max_new_tokens), 1)
    same = sum(a == b for a, b in zip(engine_out, single_out, strict=True))

    print(
        f"{args.family}, {args.layers} layers, hidden {args.hidden}, {args.heads}/{args.kv_heads} heads, "
        f"vocab {args.vocab}, float32, {torch.get_num_threads()} threads; {args.num_prompts} prompts of "
        f"{args.min_prompt_len}-{args.max_prompt_len} tokens ({sum(map(len, prompts))} in all), "
        f"{args.max_new_tokens} new tokens each"
    )
    print(f"{'':28} {'seconds':>8} {'tokens/s':>9} {'engine speedup':>15}")
    for name, seconds in (
        ("pagedkv engine", engine_s),
        ("HF generate, batched", batched_s),
        ("HF generate, one by one", single_s),
    ):
        print(f"{name:28} {seconds:>8.2f} {generated / seconds:>9.1f} {seconds / engine_s:>14.2f}x")
    print(f"greedy outputs identical to HF one-by-one (float32): {same}/{args.num_prompts}")


if __name__ == "__main__":
    main()
