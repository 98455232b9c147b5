"""Typed errors. Every error pagedkv raises on purpose is a `PagedKVError`.

Messages name the offending value and say what to do about it, because the caller
is usually a scheduler that has to decide between waiting, preempting and giving up.
"""

from __future__ import annotations


class PagedKVError(Exception):
    """Base class of every error raised by pagedkv."""


class OutOfBlocks(PagedKVError):
    """The block pool cannot satisfy a request; no state was changed."""


class UnknownSequence(PagedKVError, KeyError):
    """A sequence id that the manager does not hold (never allocated, or already freed)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateSequence(PagedKVError, ValueError):
    """A sequence id that the manager already holds."""


class InvalidArgument(PagedKVError, ValueError):
    """A value outside its documented range (sizes, counts, positions, fractions)."""


class UsageError(PagedKVError, ValueError):
    """A command-line option with a value the command cannot use; the message names the flag."""


class InvariantViolation(PagedKVError, AssertionError):
    """`check_invariants()` found inconsistent bookkeeping: a bug in pagedkv, please report it."""
