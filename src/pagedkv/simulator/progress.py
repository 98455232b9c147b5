"""A progress bar for long simulations, shown only on a terminal and only once a run is slow.

Invariant: nothing is ever written unless the stream is a TTY and `delay_s` has passed since the
bar was created, so short runs, pipes, CI logs and tests see no output from it at all.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30


class TerminalProgress:
    """Callable as the loop's ``progress(cache_name, finished, total)``; call `close` when done."""

    def __init__(self, stream: TextIO | None = None, delay_s: float = 1.0) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty()
        self._start = time.monotonic()
        self._delay_s = delay_s
        self._shown = False

    def __call__(self, cache_name: str, finished: int, total: int) -> None:
        if not self._enabled or time.monotonic() - self._start < self._delay_s:
            return
        filled = _WIDTH * finished // max(total, 1)
        bar = "#" * filled + "." * (_WIDTH - filled)
        self._stream.write(f"\r  simulating {cache_name:<12} [{bar}] {finished:,}/{total:,} requests")
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()
            self._shown = False
