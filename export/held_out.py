"""The checkpoint's held-out splits (`training.held_out`) as the model-input batches export
checks a graph on: parity and the INT8/FP16 metrics on the test split, INT8 calibration on the
train split."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from easerve.model_defs.registry import ModelEntry
from easerve.training.checkpoint import CheckpointInfo
from easerve.training.loader import evaluation_loader
from easerve.training.tasks import task_for

LATENT_SEED = 1234


def loader(entry: ModelEntry, dataset: Dataset, batch_size: int) -> DataLoader:
    """Batches of canonical samples in order."""
    return evaluation_loader(dataset, batch_size, entry.spec.target)


def input_batches(
    entry: ModelEntry, info: CheckpointInfo, dataset: Dataset, batch_size: int
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Model inputs for the samples of `dataset`, in order, prepared as the trainer prepares them
    (the task's `graph_inputs`)."""
    task = task_for(entry, list(info.class_names), {})
    latent = torch.Generator().manual_seed(LATENT_SEED)
    for inputs, targets in loader(entry, dataset, batch_size):
        yield task.graph_inputs(inputs, targets, latent)
