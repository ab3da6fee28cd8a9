"""The training batches: a DataLoader over a DistributedSampler, epoch after epoch.

Step s trains on global batch s. With P = len(data) // batch_size steps per epoch (at least 1),
epoch s // P is the permutation of the split seeded by `seed + epoch`, and global batch s is its
(s % P)-th run of `batch_size` samples; the process of rank r gets the samples r, r + world_size,
r + 2 world_size, ... of that run. A trailing part batch is dropped each epoch; a split smaller
than one batch trains on the whole split (less the remainder of an uneven split across processes)
at every step.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from easerve.artifacts.tasks import Target
from easerve.training.datasets import collate_for
from easerve.training.datasets.canonical import DetectionArrays, ImageArrays, PointArrays
from easerve.training.distributed import Distributed

# Data sets held in memory: a sample is an array slice, cheaper to make in the training process
# than to receive from a worker process.
IN_MEMORY = (ImageArrays, DetectionArrays, PointArrays)
MAX_DEFAULT_WORKERS = 4


class _ResumableSampler(DistributedSampler):
    """A DistributedSampler whose epoch can start `skip` samples in (a resumed run's first
    epoch), so the batches before the resumed step are not loaded at all."""

    def __init__(self, dataset: Dataset, ddp: Distributed, seed: int) -> None:
        super().__init__(dataset, num_replicas=ddp.world_size, rank=ddp.rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return self.num_samples - self.skip


def default_workers(dataset: Dataset, world_size: int) -> int:
    """Loader worker processes for each of `world_size` training processes: none for a data set
    held in memory; for one decoded from files, this process's share of the CPUs less the one
    it trains on (at least 1, at most MAX_DEFAULT_WORKERS)."""
    if isinstance(dataset, IN_MEMORY):
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(max(cpus // world_size - 1, 1), MAX_DEFAULT_WORKERS)


def train_loader(
    dataset: Dataset, target: Target, batch_size: int, seed: int, ddp: Distributed, workers: int, pin_memory: bool
) -> DataLoader:
    """This process's share of every global batch of `batch_size` (see the module docstring),
    loaded by `workers` persistent worker processes (0: in this process). ValueError when the
    global batch or the split does not divide across the processes."""
    if batch_size % ddp.world_size:
        raise ValueError(f"the global batch of {batch_size} does not split evenly across {ddp.world_size} processes")
    sampler = _ResumableSampler(dataset, ddp, seed)
    if sampler.num_samples == 0:
        raise ValueError(f"{len(dataset)} training samples cannot be shared by {ddp.world_size} processes")
    return DataLoader(
        dataset,
        batch_size=min(batch_size // ddp.world_size, sampler.num_samples),
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=collate_for(target),
        pin_memory=pin_memory,
        # Each epoch the loader draws a seed for its workers; from its own generator, so the
        # global one (dropout, GAN noise, augmentation) is not advanced by the data loading.
        generator=torch.Generator().manual_seed(seed),
    )


def batches(loader: DataLoader, start_step: int) -> Iterator[Any]:
    """The batches of `train_loader` for global steps `start_step`, `start_step` + 1, ...,
    without end."""
    sampler = loader.sampler
    assert isinstance(sampler, _ResumableSampler) and loader.batch_size, "not a train_loader"
    epoch, offset = divmod(start_step, sampler.num_samples // loader.batch_size)
    while True:
        sampler.set_epoch(epoch)
        sampler.skip = offset * loader.batch_size
        yield from loader
        epoch, offset = epoch + 1, 0


def evaluation_loader(dataset: Dataset, batch_size: int, target: Target) -> DataLoader:
    """Batches of `dataset`'s samples, labelled with `target`, in order."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_for(target))
