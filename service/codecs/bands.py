"""Work on a large picture in bands of rows, the bands on several cores at once.

Pillow's resampling and painting and numpy's array operations release the GIL while they run,
so a picture of a few megapixels cut into bands is drawn in about 1/cores of the time one thread
takes: what a client waits for when it asks for one large overlay. The caller works the first
band itself; the others go to a small pool of threads (one fewer than the cores). A band's work
never waits on anything (it must not cut its own work into bands), so a band handed to the pool
always finishes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def band_count(nbytes: int, least_band_bytes: int) -> int:
    """How many bands `nbytes` of work is cut into: one per core the process may use, each of
    at least `least_band_bytes` (below that a hand-off costs more than it saves)."""
    return max(1, min(_cores(), nbytes // least_band_bytes))


def in_bands(work: Callable[[int], T], bands: int) -> list[T]:
    """[work(0), ..., work(bands - 1)], work(0) on this thread and the others on the band pool."""
    later = [_band_pool().submit(work, band) for band in range(1, bands)]
    return [work(0), *(band.result() for band in later)]


def _band_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(1, _cores() - 1), thread_name_prefix="easerve-bands")
        return _pool


def _forget_pool() -> None:
    """In a forked child: the parent's band threads do not exist there, and its lock may have
    been held when it forked; the child makes its own pool when it first needs one."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _cores() -> int:
    """The cores this process may run on (all of them where the system cannot say)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
