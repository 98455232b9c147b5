"""Puts this directory on sys.path so the tests can import `engine_cases` and `checkpoints` (pytest runs
in importlib mode), and runs the engine tests on one torch thread: on the shared 2-core machine two
threads made these small models several times slower (see docs/engine.md, Threads)."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

try:
    import torch
except ImportError:  # the engine tests skip themselves without torch
    pass
else:
    torch.set_num_threads(1)
