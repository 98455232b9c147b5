"""The error every serving option raises when its value cannot be used, structured so a CLI can name its flag.

Invariant: an `OptionError` names the option as its parameter is spelled (``tensor_parallel_size``), which
is vLLM's flag with ``_`` for ``-``; `flag_message` turns it into the one line a command prints
(``--tensor-parallel-size 3: does not divide ...``), so the API and every command say the same thing.
"""

from __future__ import annotations

from pagedkv.errors import InvalidArgument


class OptionError(InvalidArgument):
    """`option` had `value`, which `reason` says is impossible (and what to do instead)."""

    def __init__(self, option: str, value: object, reason: str) -> None:
        super().__init__(f"{option}={value!r} {reason}")
        self.option, self.value, self.reason = option, value, reason

    @property
    def flag(self) -> str:
        return "--" + self.option.replace("_", "-")

    def flag_message(self, typed: str | None = None) -> str:
        """The command-line form: the flag, the value as typed (default: as held), then the reason."""
        shown = typed if typed is not None else _shown(self.value)
        return f"{self.flag} {shown}: {self.reason}"


def _shown(value: object) -> str:
    if isinstance(value, tuple | list):
        return " ".join(str(v) for v in value)
    return str(value)
