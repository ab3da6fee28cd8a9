"""The canonical samples every data set yields, whatever its source, and in-memory data sets.

One per task spec's data and target (`artifacts.tasks`):

- image, label: `(image float32 (3, H, W) in [0, 1], label int64 ())`
- image, pixel-labels: `(image, mask int64 (H, W))`, 255 = ignore
- image, boxes: `(image, {"boxes": float32 (k, 4) xyxy pixels, "labels": int64 (k,)})`
- image, instance-masks: the boxes target plus `"masks": uint8 (k, H, W)` (see `instance_masks`)
- pointcloud, label: `(points float32 (P, 3), label int64 ())`
- pointcloud, point-labels: `(points float32 (P, 3), parts int64 (P,))`

Every data set also has `class_names: list[str]` (the names of the label / mask / part indices).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from easerve.artifacts.tasks import Data, Target

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
DetectionTarget = dict[str, torch.Tensor]


@dataclass(frozen=True)
class DatasetRequest:
    """What the caller wants from a data source, defaults filled in.

    size: images are size x size; num_points: points per cloud; num_samples: samples of a
    generated split, or at most that many (a seeded subset) of a user's split (None = all);
    seed: generated samples, subsets and point resampling are deterministic by it.
    """

    data: Data
    target: Target
    split: Split
    size: int
    num_points: int
    num_samples: int | None
    seed: int


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> float32 (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255)


def detection_target(boxes: np.ndarray, labels: np.ndarray) -> DetectionTarget:
    """The canonical detection target: float32 (k, 4) xyxy boxes and int64 (k,) labels."""
    return {
        "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
    }


def tight_box(silhouette: np.ndarray) -> np.ndarray:
    """xyxy float32 box (4,) around the True pixels of a boolean (H, W) mask (must be non-empty)."""
    rows = np.flatnonzero(silhouette.any(axis=1))
    cols = np.flatnonzero(silhouette.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def detection_collate(
    samples: Sequence[tuple[torch.Tensor, DetectionTarget]],
) -> tuple[torch.Tensor, list[DetectionTarget]]:
    """DataLoader `collate_fn` for detection: images stacked to (B, 3, H, W) (all the same size),
    targets kept as a list because each image has its own number of boxes."""
    images, targets = zip(*samples)
    return torch.stack(images), list(targets)


# Targets torch's default collation cannot stack (a varying count per sample).
_COLLATE: dict[Target, Callable[[Sequence[Any]], Any]] = {
    "boxes": detection_collate,
    "instance-masks": detection_collate,
}


def collate_for(target: Target) -> Callable[[Sequence[Any]], Any] | None:
    """The DataLoader `collate_fn` for samples labelled with `target` (None: torch's default)."""
    return _COLLATE.get(target)


class ImageArrays(Dataset):
    """Whole split in memory: uint8 images (N, H, W, 3) and per-image targets, either labels
    (N,) (classification) or masks (N, H, W) (segmentation)."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, class_names: Sequence[str]) -> None:
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = targets
        self.class_names = list(class_names)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return image_tensor(self.images[index]), torch.as_tensor(self.targets[index], dtype=torch.int64)


class DetectionArrays(Dataset):
    """Whole split in memory: uint8 images (N, H, W, 3), and per image its boxes (k, 4) and
    labels (k,)."""

    def __init__(
        self,
        images: np.ndarray,
        boxes: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        class_names: Sequence[str],
    ) -> None:
        if not len(images) == len(boxes) == len(labels):
            raise ValueError(f"{len(images)} images, {len(boxes)} box sets, {len(labels)} label sets")
        self.images = images
        self.boxes = list(boxes)
        self.labels = list(labels)
        self.class_names = list(class_names)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, DetectionTarget]:
        return image_tensor(self.images[index]), detection_target(self.boxes[index], self.labels[index])


class PointArrays(Dataset):
    """Whole split in memory: float32 clouds (N, P, 3) and per-cloud targets, either labels (N,)
    (classification) or per-point parts (N, P) (part segmentation)."""

    def __init__(self, points: np.ndarray, targets: np.ndarray, class_names: Sequence[str]) -> None:
        if len(points) != len(targets):
            raise ValueError(f"{len(points)} clouds but {len(targets)} targets")
        self.points = np.ascontiguousarray(points, dtype=np.float32)
        self.targets = targets
        self.class_names = list(class_names)

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(self.points[index]), torch.as_tensor(self.targets[index], dtype=torch.int64)
