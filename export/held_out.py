"""The data export checks a graph on: the checkpoint's generated splits, as model-input batches.

Parity and the INT8/FP16 metrics use the held-out test split; INT8 calibration uses the train
split. Both are regenerated from the checkpoint's data set name and seed, so they are the
samples the model was evaluated on, and need no files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from model_defs.registry import ModelEntry
from training.checkpoint import CheckpointInfo
from training.datasets import DatasetError, Split, detection_collate, open_dataset
from training.tasks import task_for
from training.trainer import DEFAULT_DATA

LATENT_SEED = 1234


@dataclass
class HeldOutData:
    """A split of the checkpoint's data set, and the name it was opened by (for the manifest)."""

    dataset: Dataset
    description: str


def _size_arguments(info: CheckpointInfo) -> dict[str, int]:
    preprocessing = info.preprocessing
    if preprocessing.get("kind") == "points":
        return {"num_points": int(preprocessing["num_points"])}
    return {"size": int(preprocessing["image_size"][0])}


def open_split(info: CheckpointInfo, split: Split, num_samples: int) -> HeldOutData:
    """`num_samples` samples of `split` of the data the checkpoint was trained on, at the size the
    model was trained at; the task's generated set when that data is not on this machine."""
    source = info.dataset
    size = _size_arguments(info)
    try:
        dataset = open_dataset(source, info.task, split, num_samples=num_samples, seed=info.seed, **size)
    except DatasetError:
        source = DEFAULT_DATA[info.task]
        dataset = open_dataset(source, info.task, split, num_samples=num_samples, seed=info.seed, **size)
    return HeldOutData(dataset, f"{source} {split} split, {len(dataset)} samples, seed {info.seed}")


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
