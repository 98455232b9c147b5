"""Simulator: the same request list served by naive contiguous caches and by the paged cache.

`workload` builds request lists (synthetic Poisson traffic), `traces` loads real traces into them.
"""
