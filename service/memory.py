"""Keeping the process's memory close to what it uses (glibc only; elsewhere these do nothing).

glibc serves large allocations from mmap and gives them back on free, but after a large block
is freed it raises its mmap threshold, so the next images and tensors come from the heap and
stay resident after a burst. `keep_large_blocks_mapped` pins the threshold; `release_free_memory`
returns what the heap has freed (called after heavy requests finish).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache

logger = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
LARGE_BLOCK_BYTES = 1 << 20


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def keep_large_blocks_mapped(threshold_bytes: int = LARGE_BLOCK_BYTES) -> bool:
    """Serve every allocation of `threshold_bytes` or more from mmap, so freeing it returns it to
    the system at once. False where the C library is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes))


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc's malloc_trim)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
