"""The one progress bar every long-running command shows (simulate, paper, sweep, plan, generate).

Invariant: nothing is written unless standard error is a terminal and the work has already run for
`delay_s`, so short runs, pipes, CI logs and tests see no output from it at all. The bar itself is
tqdm's (rate and time left included); this wrapper fixes those defaults in one place.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TextIO

from tqdm import tqdm


class Progress:
    """A bar over `total` units of work (requests, points, tokens); `update(k)` adds k done units.

    Use as a context manager, or call `close` when done.
    """

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        unit: str = "it",
        *,
        delay_s: float = 1.0,
        stream: TextIO | None = None,
    ) -> None:
        stream = stream if stream is not None else sys.stderr
        self._done = 0
        self._bar = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            file=stream,
            disable=not _isatty(stream),
            delay=delay_s,
            leave=False,
            dynamic_ncols=True,
        )

    def update(self, done: int = 1) -> None:
        self._done += done
        self._bar.update(done)

    def set_description(self, desc: str) -> None:
        self._bar.set_description_str(desc, refresh=False)

    def add_total(self, more: int) -> None:
        """Grow the total (work discovered while running)."""
        self._bar.total = (self._bar.total or 0) + more
        self._bar.refresh()

    @property
    def done(self) -> int:
        return self._done

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
