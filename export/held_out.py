"""The checkpoint's held-out splits (`training.held_out`) as the model-input batches export
checks a graph on: parity and the INT8/FP16 metrics on the test split, INT8 calibration on the
train split."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from easerve.model_defs.registry import ModelEntry
from easerve.training.checkpoint import CheckpointInfo
from easerve.training.datasets import detection_collate
from easerve.training.tasks import task_for

LATENT_SEED = 1234


def loader(entry: ModelEntry, dataset: Dataset, batch_size: int) -> DataLoader:
    """Batches of canonical samples in order (detection targets kept as lists)."""
    collate = detection_collate if entry.task == "detection" else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)


def input_batches(
    entry: ModelEntry, info: CheckpointInfo, dataset: Dataset, batch_size: int
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Model inputs for the samples of `dataset`, in order, prepared as the trainer prepares them.

    Generation: (z, label) with the dataset's labels and seeded normal z; every other task: the
    task's `prepare` of the images or points.
    """
    task = task_for(entry, list(info.class_names), {})
    generator = torch.Generator().manual_seed(LATENT_SEED)
    for inputs, targets in loader(entry, dataset, batch_size):
        if entry.task == "generation":
            z = torch.randn(targets.shape[0], int(info.config["z_dim"]), generator=generator)
            yield z, targets
        else:
            yield (task.prepare(inputs),)
