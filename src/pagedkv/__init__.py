"""pagedkv: the paged KV-cache manager behind vLLM's PagedAttention, in readable Python.

The core (`BlockManager`) uses only the standard library. The simulator needs matplotlib
for its plot; the tensor cache and the engine need the `torch` extra.
"""

from pagedkv.block_manager import BlockManager, Stats
from pagedkv.errors import (
    DuplicateSequence,
    InvalidArgument,
    OutOfBlocks,
    PagedKVError,
    UnknownSequence,
)

__all__ = [
    "BlockManager",
    "DuplicateSequence",
    "InvalidArgument",
    "OutOfBlocks",
    "PagedKVError",
    "Stats",
    "UnknownSequence",
]
__version__ = "0.1.0"
