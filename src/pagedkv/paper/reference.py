"""The numbers the paper prints, keyed exactly as `pagedkv paper --json` keys its own.

Invariant: a key is present here only where the paper (Kwon et al., SOSP 2023, arXiv 2309.06180) prints a
number for it; everything else compares against ``None``, never against a guess. Percentages are in
percent of total KV capacity (Fig. 2), of blocks without sharing (Fig. 15).
"""

from __future__ import annotations

# The JSON keys fig2.<system>.<category>: the paper's four categories. The simulator splits idle free
# memory ("free") from external fragmentation; the paper counts both as "external fragmentation & other".
CATEGORIES = ("token_states", "reservation", "internal", "external")

SYSTEMS = ("orca_max", "orca_pow2", "orca_oracle", "vllm")
SYSTEM_LABELS = {
    "orca_max": "Orca (Max)",
    "orca_pow2": "Orca (Pow2)",
    "orca_oracle": "Orca (Oracle)",
    "vllm": "vLLM",
}
CATEGORY_LABELS = {
    "token_states": "token states",
    "reservation": "reservation",
    "internal": "internal frag.",
    "external": "external frag. & other",
}
SAMPLE_WIDTHS = (2, 4, 6)
BLOCK_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# Fig. 2: average share of KV capacity, OPT-13B on one A100-40GB, ShareGPT at 4 req/s, 300-900 s.
# For vLLM the paper prints only the token-state share (96.3); its bar's remainder is unlabelled.
FIG2: dict[str, dict[str, float | None]] = {
    "orca_max": {"token_states": 20.4, "reservation": 13.3, "internal": 57.3, "external": 8.9},
    "orca_pow2": {"token_states": 26.8, "reservation": 17.9, "internal": 13.6, "external": 41.6},
    "orca_oracle": {"token_states": 38.2, "reservation": 25.2, "internal": 0.0, "external": 36.6},
    "vllm": {"token_states": 96.3, "reservation": None, "internal": None, "external": None},
}

# Fig. 13a: average number of batched requests, OPT-13B, ShareGPT at 2 req/s.
FIG13A: dict[str, float] = {"orca_max": 7.00, "orca_pow2": 9.81, "orca_oracle": 13.62, "vllm": 30.42}

# Fig. 15 (Alpaca) and §6.3 (ShareGPT ranges, n/width 2 -> 6): memory saved by sharing, in percent.
FIG15_ALPACA: dict[str, dict[int, float]] = {
    "parallel": {2: 6.09, 4: 8.53, 6: 9.79},
    "beam": {2: 37.56, 4: 53.13, 6: 55.16},
}
FIG15_SHAREGPT_RANGE: dict[str, tuple[float, float]] = {"parallel": (16.2, 30.5), "beam": (44.3, 66.3)}

# Fig. 18b / §7.2 prints latency, not waste: block sizes 16-128 serve ShareGPT best; larger blocks lose
# memory to internal fragmentation, smaller ones under-use the GPU in the attention kernel.
FIG18B_BEST_BLOCK_SIZES = (16, 32, 64, 128)
