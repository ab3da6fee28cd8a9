"""Shared-memory arenas: one segment per HTTP worker, where its requests' tensors travel.

The model process owns every segment (`ArenaOwner`): it creates one per worker before starting
it, unlinks a dead worker's at once (its replacement gets a new one) and all of them at shutdown.
Names start with the server's prefix (`easerve-<pid>-...`), so leftovers can be found in
/dev/shm. A worker maps its own (`WorkerArena`) and hands out regions of it to its requests; the
model process maps a request's inputs and writes its outputs in the request's region.

Python 3.11's `SharedMemory` registers a segment with the resource tracker in every process that
attaches to it. Workers are spawned by the owner and so share its tracker: their registration is
the owner's entry again, nothing is unlinked or reported when a worker exits, and if the owner is
killed the tracker unlinks what it still holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from easerve.artifacts.shapes import concrete_shape
from easerve.service.frontend.wire import aligned
from easerve.service.repository import ServedModel

logger = logging.getLogger(__name__)

# A worker's arena holds this many full batches of the largest model (inputs and outputs at the
# manifest's sizes), at least MIN_ARENA_BYTES; a request that finds no room travels in its frame.
ARENA_BATCHES = 4
MIN_ARENA_BYTES = 4 * 1024 * 1024
SHM_DIRECTORY = "/dev/shm"


def segment_prefix() -> str:
    """A prefix no other server on this machine uses: `easerve-<pid>-<random>`."""
    return f"easerve-{os.getpid()}-{secrets.token_hex(3)}"


def item_bytes(model: ServedModel) -> int:
    """Bytes of one item's inputs and outputs at the manifest's sizes (outputs whose size depends
    on nothing the manifest fixes are left out)."""
    manifest = model.manifest
    total = 0
    for tensor in (*manifest.inputs, *manifest.outputs):
        with contextlib.suppress(ValueError):
            total += aligned(
                int(np.prod(concrete_shape(tensor, manifest.preprocessing, 1))) * np.dtype(tensor.dtype).itemsize
            )
    return total


def arena_bytes(models: Iterable[ServedModel], workers: int) -> int:
    """The size of each worker's arena: `ARENA_BATCHES` full batches of the largest model, but
    no more than a share of /dev/shm's free space that leaves room for replacements (tmpfs
    would kill a process writing past it with SIGBUS)."""
    wanted = max(MIN_ARENA_BYTES, ARENA_BATCHES * max(item_bytes(m) * m.max_batch_size for m in models))
    with contextlib.suppress(OSError):
        stats = os.statvfs(SHM_DIRECTORY)
        wanted = min(wanted, stats.f_bavail * stats.f_frsize // (2 * workers + 2))
    return aligned(max(wanted, 0))


class ArenaOwner:
    """The model process's side: every worker's segment, by name."""

    def __init__(self, prefix: str, size: int) -> None:
        self.prefix = prefix
        self.size = size
        self._segments: dict[str, SharedMemory] = {}
        self._retired: list[SharedMemory] = []
        self._created = 0

    def create(self, worker: int) -> str | None:
        """A new segment for `worker`; None (requests travel in frames) if none can be made."""
        if self.size == 0:
            return None
        self._created += 1
        name = f"{self.prefix}-w{worker}-{self._created}"
        try:
            self._segments[name] = SharedMemory(name, create=True, size=self.size)
        except OSError as error:
            logger.warning(
                "no shared-memory arena for HTTP worker %d (%s): its tensors travel on the socket", worker, error
            )
            return None
        return name

    def buffer(self, name: str) -> memoryview:
        """The mapping of segment `name`; KeyError if it is not (or no longer) one of ours."""
        return self._segments[name].buf

    def retire(self, name: str | None) -> None:
        """Unlink `name` now (a dead worker's); its mapping goes once no batch still reads it."""
        segment = self._segments.pop(name, None) if name else None
        if segment is not None:
            segment.unlink()
            self._retired.append(segment)
        self.release_retired()

    def release_retired(self) -> None:
        """Unmap the retired segments no array points into any more."""
        still_used = []
        for segment in self._retired:
            try:
                segment.close()
            except BufferError:  # a batch that began before the worker died still reads it
                still_used.append(segment)
        self._retired = still_used

    def close(self) -> None:
        """Unlink every segment (at shutdown)."""
        for name in list(self._segments):
            self.retire(name)
        self._retired.clear()


@dataclass(frozen=True)
class Region:
    offset: int
    size: int


class RegionAllocator:
    """First fit over `[0, size)`; freed regions merge with their free neighbours."""

    def __init__(self, size: int) -> None:
        self._free: list[Region] = [Region(0, size)] if size else []

    def allocate(self, nbytes: int) -> Region | None:
        nbytes = aligned(max(nbytes, 1))
        for index, hole in enumerate(self._free):
            if hole.size >= nbytes:
                rest = Region(hole.offset + nbytes, hole.size - nbytes)
                self._free[index : index + 1] = [rest] if rest.size else []
                return Region(hole.offset, nbytes)
        return None

    def release(self, region: Region) -> None:
        holes = sorted([*self._free, region], key=lambda hole: hole.offset)
        merged: list[Region] = []
        for hole in holes:
            if merged and merged[-1].offset + merged[-1].size == hole.offset:
                merged[-1] = Region(merged[-1].offset, merged[-1].size + hole.size)
            else:
                merged.append(hole)
        self._free = merged


class WorkerArena:
    """A worker's side: its segment mapped, and regions of it for its requests."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._segment = SharedMemory(name)
        self.buffer = self._segment.buf
        self._regions = RegionAllocator(self._segment.size)

    def reserve(self, nbytes: int) -> Region | None:
        """A region of `nbytes` or more; None when the arena has no such room now."""
        return self._regions.allocate(nbytes)

    def release(self, region: Region) -> None:
        self._regions.release(region)
