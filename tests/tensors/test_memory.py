"""A pool too large for this machine is refused before anything is allocated, naming what it needs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pagedkv.tensors.memory import GIB, available_memory_bytes, check_fits_in_memory, kv_cache_bytes


def test_kv_cache_bytes_is_what_the_cache_allocates() -> None:
    torch = pytest.importorskip("torch")
    from pagedkv.tensors import PagedKVCache

    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        cache = PagedKVCache(3, 5, 4, 2, 8, dtype=dtype)
        size = torch.empty((), dtype=dtype).element_size()
        assert kv_cache_bytes(3, 5, 4, 2, 8, size) == cache.nbytes == cache.kv.numel() * size


def test_a_pool_larger_than_memory_is_refused_before_allocating() -> None:
    pytest.importorskip("torch")
    from pagedkv.tensors import InsufficientMemory, PagedKVCache

    # 32 layers x 2 x 10^7 blocks x 8 heads x 16 slots x 128 x 4 bytes = 40 TB: never allocatable here
    with pytest.raises(InsufficientMemory, match=r"needs 39,062\.50 GiB but only [\d,.]+ GiB") as info:
        PagedKVCache(32, 10**7, 16, 8, 128)
    assert "fewer blocks" in str(info.value)
    assert isinstance(info.value, MemoryError)


def test_check_names_what_and_the_remedy() -> None:
    available = available_memory_bytes()
    assert available is not None and available > 0  # Linux: /proc/meminfo
    check_fits_in_memory(available // 2, "half", "never raised")
    with pytest.raises(MemoryError, match=r"^the thing needs .* GiB .*; do less$"):
        check_fits_in_memory(available + GIB, "the thing", "do less")


def test_memory_module_does_not_import_torch() -> None:
    code = "import sys, pagedkv.tensors.memory; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
