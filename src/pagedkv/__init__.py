"""pagedkv: the paged KV-cache manager behind vLLM's PagedAttention, in readable Python.

The core (`BlockManager`) uses only the standard library. The simulator needs matplotlib
for its plot; the tensor cache and the engine need the `torch` extra.

`pagedkv.LLM` and `pagedkv.SamplingParams` (the engine's text front end, `pagedkv.engine`) are
imported on first use (PEP 562), so `import pagedkv` never imports torch.
"""

from typing import Any

from pagedkv.block_manager import BlockManager, Stats
from pagedkv.errors import (
    DuplicateSequence,
    InvalidArgument,
    OutOfBlocks,
    PagedKVError,
    UnknownSequence,
)

__all__ = [
    "LLM",
    "BlockManager",
    "DuplicateSequence",
    "InvalidArgument",
    "OutOfBlocks",
    "PagedKVError",
    "SamplingParams",
    "Stats",
    "UnknownSequence",
]
__version__ = "0.1.0"

_ENGINE_EXPORTS = ("LLM", "SamplingParams")


def __getattr__(name: str) -> Any:
    if name in _ENGINE_EXPORTS:
        import pagedkv.engine

        return getattr(pagedkv.engine, name)
    raise AttributeError(f"module 'pagedkv' has no attribute {name!r}")
