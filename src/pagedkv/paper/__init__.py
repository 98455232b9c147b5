"""Reproduction of the PagedAttention paper's memory figures (Kwon et al., SOSP 2023) on the simulator.

`reference` (the paper's numbers, pagedkv's names for what it measures, the fidelity goals),
`setting` (OPT-13B on one A100-40GB from the simulator's catalogues, its step time, the run's knobs),
`sharegpt` (the paper's request stream), `tasks` (one picklable task per simulation and `run_task`),
`run` (every task of a run through one map-like function, grouped by figure), `results` (means and
spreads over seeds, the JSON), `report` (the side-by-side table and why numbers differ), `figures`
(PNGs), `cli` (``pagedkv paper``). See docs/paper.md.
"""
