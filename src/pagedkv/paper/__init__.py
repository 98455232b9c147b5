"""Reproduction of the PagedAttention paper's memory figures (Kwon et al., SOSP 2023) on the simulator.

`setting` (OPT-13B on an A100-40GB as numbers), `timing` (seconds per iteration), `sharegpt` (the paper's
request stream), `experiments` (Figs. 2, 13a, 15, 18b on the simulator's caches), `run` (all of them),
`results` / `report` / `figures` / `notes` (JSON, table, PNGs, why numbers differ), `reference` (the paper's
numbers), `goals` (the fidelity goals), `cli` (``pagedkv paper``). See docs/paper.md.
"""
