"""The held-out data a checkpoint is measured on: its data set's splits, regenerated from the name,
seed and input size the checkpoint records, so re-measuring needs no files (export's parity and
INT8 checks, `easerve evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from easerve.training.checkpoint import CheckpointInfo
from easerve.training.datasets import DatasetError, Split, generated_source, open_dataset


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


def open_split(info: CheckpointInfo, split: Split, num_samples: int | None, *, fallback: bool = True) -> HeldOutData:
    """`num_samples` samples (None: the data set's default) of `split` of the data the checkpoint
    was trained on, at the size the model was trained at. When that data is not on this machine:
    the task's generated set if `fallback`, else the DatasetError."""
    source = info.dataset
    size = _size_arguments(info)
    try:
        dataset = open_dataset(source, info.task, split, num_samples=num_samples, seed=info.seed, **size)
    except DatasetError:
        if not fallback:
            raise
        source = generated_source(info.task)
        dataset = open_dataset(source, info.task, split, num_samples=num_samples, seed=info.seed, **size)
    return HeldOutData(dataset, f"{source} {split} split, {len(dataset)} samples, seed {info.seed}")
