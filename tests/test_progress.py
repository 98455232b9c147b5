"""The progress bar: silent off a terminal, drawn on one once the delay has passed."""

from __future__ import annotations

import io

from pagedkv.progress import Progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with Progress(10, "simulating", "req", delay_s=0.0, stream=stream) as bar:
        bar.update(10)
        assert bar.done == 10
    assert stream.getvalue() == ""


def test_drawn_on_a_terminal_with_counts() -> None:
    stream = FakeTerminal()
    with Progress(10, "simulating", "req", delay_s=0.0, stream=stream) as bar:
        bar.update(4)
        bar.set_description("paged")
        bar.add_total(5)
    out = stream.getvalue()
    assert "4/15" in out  # the total grew by 5 after 4 were done
    assert "simulating" in out


def test_a_quick_run_draws_nothing_even_on_a_terminal() -> None:
    stream = FakeTerminal()
    with Progress(10, "simulating", "req", delay_s=60.0, stream=stream) as bar:
        bar.update(5)
    assert stream.getvalue() == ""
