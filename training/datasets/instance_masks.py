"""The "instance-masks" target: its canonical form, its in-memory data set and the crowded
shape scenes that serve it.

A sample is `(image, {"boxes": float32 (k, 4) xyxy pixels, "labels": int64 (k,), "masks": uint8
(k, H, W)})`: the boxes target plus each instance's mask (1 = its visible pixels), each box the
tight box of its mask. COCO's masks are read by `coco_masks`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from easerve.training.datasets.canonical import DetectionTarget, detection_target, image_tensor, tight_box
from easerve.training.datasets.shapes2d import SceneLayout

# Touching and occluding objects, often of one class: what only instance masks tell apart.
CROWDED_SHAPES = SceneLayout("crowded", 2, 5, (0.1, 0.2), max_overlap=0.3, same_class=0.4, touching=0.6)


def instance_target(masks: np.ndarray, labels: np.ndarray) -> DetectionTarget:
    """The canonical instance target of boolean or 0/1 masks (k, H, W) and their labels (k,):
    instances without a visible pixel are left out, each box is its mask's tight box."""
    masks = np.asarray(masks, dtype=bool)
    visible = masks.any(axis=(1, 2))
    masks, labels = masks[visible], np.asarray(labels)[visible]
    boxes = np.array([tight_box(mask) for mask in masks], np.float32).reshape(-1, 4)
    return {**detection_target(boxes, labels), "masks": torch.from_numpy(masks.astype(np.uint8))}


class InstanceArrays(Dataset):
    """Whole split in memory: uint8 images (N, H, W, 3), instance maps (N, H, W) (0 = background,
    1 + the index of the object in that image's labels) and per image the objects' labels."""

    def __init__(
        self, images: np.ndarray, instances: np.ndarray, labels: Sequence[np.ndarray], class_names: Sequence[str]
    ) -> None:
        if not len(images) == len(instances) == len(labels):
            raise ValueError(f"{len(images)} images, {len(instances)} instance maps, {len(labels)} label sets")
        self.images = images
        self.instances = instances
        self.labels = list(labels)
        self.class_names = list(class_names)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, DetectionTarget]:
        labels = self.labels[index]
        ids = np.arange(1, len(labels) + 1, dtype=self.instances.dtype)
        masks = self.instances[index][None] == ids[:, None, None]
        return image_tensor(self.images[index]), instance_target(masks, labels)
