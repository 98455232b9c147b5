"""`python simulate.py [options]`: the same as `pagedkv simulate [options]` (see `--help`).

Writes fragmentation.png: naive contiguous vs Orca vs paged KV caches of equal memory serving the
same requests. Works from a fresh checkout without installing pagedkv (only matplotlib is needed).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from pagedkv.cli import main

if __name__ == "__main__":
    sys.exit(main(["simulate", *sys.argv[1:]]))
