"""Shared setup for the core (BlockManager) tests.

The tests import their reference model as ``reference``; pytest runs in importlib mode (see pyproject), which
does not put test directories on sys.path, so this directory is added here.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
