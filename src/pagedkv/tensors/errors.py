"""Typed errors of the tensor layer: every one is an `InvalidArgument`, hence a `PagedKVError`.

They are raised before any tensor is touched, so a caller that catches them knows the
cache still holds exactly what it held before the call.
"""

from __future__ import annotations

from pagedkv.errors import InvalidArgument


class CacheMismatch(InvalidArgument):
    """A tensor whose shape, dtype or device does not match the KV cache it is used with."""


class BlockOutOfRange(InvalidArgument, IndexError):
    """A block id or slot that points outside the block pool."""


class BackendUnavailable(InvalidArgument):
    """An attention backend was asked for by name but cannot serve this call (not installed, or the
    tensors are of a kind it does not handle)."""


def require_positive_ints(**sizes: object) -> None:
    """Raise `InvalidArgument` naming the first size that is not a positive int."""
    for name, value in sizes.items():
        if not isinstance(value, int) or value <= 0:
            raise InvalidArgument(f"{name} must be a positive int, got {value!r}")


class InsufficientMemory(InvalidArgument, MemoryError):
    """A pool (or model) larger than the memory this machine has free; refused before allocating."""
