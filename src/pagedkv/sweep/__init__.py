"""`pagedkv sweep`: many simulations over a grid of `pagedkv simulate` options, one tidy results table.

- `options`: simulate's options by name, rendered to argv, and each point's inputs;
- `config`: the TOML sweep file; `grid`: axes and fixed options expanded into points;
- `table`: results.csv, appended point by point (resumable) and converted to Parquet;
- `plots`: a metric against one axis, one line per value of another; `cli`: the command;
- `plans`: ``--plan``, every point a one-configuration `pagedkv plan` (its options, its task, its row).

Points run through `pagedkv.runner` (local processes or Ray), the runner `pagedkv paper` and the
planner share. The simulator never imports this package.
"""
