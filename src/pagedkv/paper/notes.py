"""Why pagedkv's numbers differ from the paper's: one note per figure, filled in with what was measured.

Invariant: a note states a mechanism (what the paper's system or measurement did that the simulator
does not, or the reverse) and quotes only numbers from this run or printed in the paper; it never
claims a difference is explained unless the mechanism is modelled or measured here.
"""

from __future__ import annotations

from pagedkv.paper import goals, reference
from pagedkv.paper.config import PaperConfig
from pagedkv.paper.results import PaperResults

_ORCA = ("orca_max", "orca_pow2", "orca_oracle")


def explain(results: PaperResults, config: PaperConfig) -> dict[str, str]:
    """Notes keyed by figure (``fig2``, ``fig2.vllm``, ``fig13a``, ``fig15``, ``fig15.beam``, ``fig18b``)."""
    notes: dict[str, str] = {}
    if results.fig2:
        notes.update(_fig2(results))
    if results.fig13a:
        notes["fig13a"] = _fig13a(results, config)
    if results.fig15:
        notes.update(_fig15(config))
    if results.fig18b:
        notes["fig18b"] = (
            "the paper's Fig. 18b is latency: blocks under 16 tokens lose there because the attention kernel "
            "under-uses the GPU with tiny blocks, a kernel cost this memory simulator does not model; waste "
            "alone only grows with the block size (a sequence's last block is half empty on average)"
        )
    notes["not modelled"] = (
        "the artifact's 2,560-token cap on tokens batched per iteration and its 256-sequence cap for Orca "
        "(never binding here: prompts are < 2,048 tokens and batches stay far below 256), and the slowdown "
        "of the authors' per-iteration memory accounting during the Fig. 2 runs"
    )
    return notes


def _fig2(results: PaperResults) -> dict[str, str]:
    misses = [
        f"{reference.SYSTEM_LABELS[system]} {reference.CATEGORY_LABELS[category]}"
        for system in _ORCA
        if system in results.fig2
        for category in reference.CATEGORIES
        if goals.fig2_ok(results.fig2[system].category(category), reference.FIG2[system][category]) is False
    ]
    status = (
        f"outside {goals.FIG2_POINTS:g} points: {', '.join(misses)}" if misses else "all Orca bars in goal"
    )
    notes = {
        "fig2": (
            f"{status}. Orca's breakdown follows from which requests happen to be running: the paper "
            "shows one 900-s run on a GPU whose iteration time varied, pagedkv the mean of seeded streams "
            "under a time model; the buddy allocator here takes the lowest free address (the artifact "
            "reuses the most recently freed block), which moves holes between Pow2/Oracle's external "
            "fragmentation and what fits"
        )
    }
    vllm = results.fig2.get("vllm")
    if vllm is not None:
        notes["fig2.vllm"] = (
            f"the paper labels only vLLM's token states; the other {100 - vllm.token_states:.1f} % here "
            f"are {vllm.reservation:.1f} % empty slots of partly filled last blocks (reservation), "
            f"{vllm.internal:.1f} % padding of final blocks (internal) and {vllm.external:.1f} % free "
            "blocks, the 1 % admission watermark included (external); the artifact's plot instead splits "
            "vLLM's unallocated share evenly between reservation and internal fragmentation"
        )
    return notes


def _fig13a(results: PaperResults, config: PaperConfig) -> str:
    text = (
        "Orca's batches are bounded by memory (every Orca system queues at "
        f"{config.fig13a_rate:g} req/s), so they do not depend on the time model"
    )
    vllm = results.fig13a.get("vllm")
    if vllm is not None:
        text += (
            f"; vLLM's is not: at {config.fig13a_rate:g} req/s it runs near its saturation point (mean queue "
            f"{vllm.mean_queue:.1f} requests, {vllm.mean_iteration_ms:.1f} ms an iteration), where the "
            "batch follows arrival rate x time in the system, so a slower iteration (more host overhead, "
            "lower bandwidth) gives a larger batch; docs/paper.md shows the sensitivity"
        )
    return text


def _fig15(config: PaperConfig) -> dict[str, str]:
    p, widths = config.beam_prune_prob, config.fig15_widths
    ancestors = ", ".join(f"{(k - 1) ** 2 / (p * k):.0f}" if p > 0 else "inf" for k in widths)
    listed = ", ".join(map(str, widths))
    return {
        "fig15": (
            "the paper's per-width bars are Alpaca (prompts ~19 tokens, outputs ~58), whose short prompts "
            "leave little to share in parallel sampling; its ShareGPT savings are printed only as ranges "
            "(parallel 16.2-30.5 %, beam 44.3-66.3 %), read here as the values for widths 2 and 6"
        ),
        "fig15.beam": (
            f"beam model: every decode step each beam is, with probability p = {p:g}, pruned and replaced "
            "by a fork of another beam chosen uniformly, so beams share every block before their common "
            f"ancestor, about (k-1)^2/(p k) steps back ({ancestors} tokens for k = {listed}), short of "
            "ShareGPT's ~338-token outputs: beams share most blocks and savings approach 1 - 1/k; the "
            "paper's lower ShareGPT savings (66.3 % at width 6) mean real OPT-13B beams keep more private "
            "tokens (in this model, p ~ 0.01; docs/paper.md), which the simulator's default does not assume"
        ),
    }
