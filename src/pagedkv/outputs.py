"""Output files of every command: checked before the work starts, written atomically.

Invariant: a command never leaves a half-written file where its output belongs. Each file is written
to a temporary file in the same folder and renamed over the target only once it is complete (a
rename within one folder is atomic on POSIX), and the temporary file is removed if anything —
an error or Ctrl-C — stops the write. Paths are checked up front (`check_output_file`,
`check_output_dir`), so a typo in `--out` costs an error line, not a finished simulation.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pagedkv.errors import UsageError

IMAGE_SUFFIXES = (".png", ".svg", ".pdf")


def check_output_file(path: str | os.PathLike[str], flag: str, suffixes: Iterable[str] | None = None) -> Path:
    """The output file `path` as a `Path`, or `UsageError` naming `flag` if it cannot be written there.

    Refused: a path that is an existing folder, a missing or non-writable folder, an existing file that
    cannot be replaced, and (when `suffixes` is given) an extension outside `suffixes`.
    """
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file name inside it")
    allowed = tuple(suffixes) if suffixes is not None else None
    if allowed is not None and target.suffix.lower() not in allowed:
        raise UsageError(
            f"{flag} {path}: unsupported file type {target.suffix or '(none)'!r}; "
            f"use one of {', '.join(allowed)}"
        )
    _check_folder(target.parent, flag, path)
    if target.exists() and not os.access(target, os.W_OK):
        raise UsageError(f"{flag} {path}: the file exists and is read-only; choose another path")
    return target


def check_output_dir(path: str | os.PathLike[str], flag: str) -> Path:
    """The output folder `path` (created later by the writer if missing), or `UsageError` naming `flag`."""
    target = Path(path)
    if target.exists():
        if not target.is_dir():
            raise UsageError(f"{flag} {path}: is a file, not a folder; choose a folder name")
        _check_folder(target, flag, path)
    else:
        _check_folder(target.parent, flag, path)
    return target


def _check_folder(folder: Path, flag: str, path: str | os.PathLike[str]) -> None:
    folder = folder if str(folder) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: the folder {folder} is not writable; choose another path")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path`, on any exit it is gone.

    For writers that want a file name (``figure.savefig(tmp, format="png")``)::

        with atomic_path("plot.png") as tmp:
            figure.savefig(tmp, format="png")
    """
    target = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or Path("."))
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], document: Any) -> None:
    """Write `document` as JSON to `path` atomically (NaN and infinities are refused: not JSON)."""
    write_text(path, json.dumps(document, allow_nan=False))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
