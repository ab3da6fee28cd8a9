"""Instance segmentation: the detector's loss plus the masks'; judged by COCO mask AP.

The metric lives here, beside the one task that reports it; the pycocotools evaluation it shares
with detection is `metrics.coco_stats`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from easerve.artifacts.tasks import INSTANCE_SEGMENTATION
from easerve.model_defs import instances
from easerve.training import metrics
from easerve.training.tasks.base import Batch
from easerve.training.tasks.detection import DetectionTask


@dataclass
class InstanceMasks:
    """Per image: boolean masks (k, H, W) at the image's size, labels (k,) and scores (k,)."""

    masks: list[np.ndarray]
    labels: list[np.ndarray]
    scores: list[np.ndarray]


def _rle_records(masks: np.ndarray, labels: np.ndarray, image_id: int) -> list[dict]:
    """COCO records (image, category, RLE segmentation) of one image's boolean masks (k, H, W)."""
    from pycocotools import mask as coco_mask

    if len(masks) == 0:
        return []
    encoded = coco_mask.encode(np.asfortranarray(np.moveaxis(masks, 0, -1).astype(np.uint8)))
    return [
        {"image_id": image_id, "category_id": int(label), "segmentation": rle}
        for rle, label in zip(encoded, labels, strict=True)
    ]


def mask_average_precision(
    found: InstanceMasks, truth_masks: list[np.ndarray], truth_labels: list[np.ndarray], num_classes: int
) -> dict[str, float]:
    """COCO mask AP (IoU 0.50:0.95) and AP50, by pycocotools' evaluator on RLE-encoded masks."""
    from pycocotools import mask as coco_mask

    images, annotations, results = [], [], []
    for image_id, (masks, labels) in enumerate(zip(truth_masks, truth_labels, strict=True)):
        images.append({"id": image_id, "height": masks.shape[-2], "width": masks.shape[-1]})
        for record in _rle_records(masks, labels, image_id):
            area = float(coco_mask.area(record["segmentation"]))
            annotations.append(record | {"id": len(annotations) + 1, "area": area, "iscrowd": 0})
    for image_id, (masks, labels, scores) in enumerate(zip(found.masks, found.labels, found.scores, strict=True)):
        for record, score in zip(_rle_records(masks, labels, image_id), scores, strict=True):
            results.append(record | {"score": float(score)})
    stats = metrics.coco_stats(images, annotations, results, num_classes, "segm")
    return {"mask_ap": stats[0], "mask_ap50": stats[1]}


@dataclass
class InstanceSegmentationTask(DetectionTask):
    """The detector's loss plus the masks' (`instances.mask_loss`); judged by COCO mask AP."""

    primary_metric: str = "mask_ap"
    spec = INSTANCE_SEGMENTATION
    score_floor: ClassVar[float] = 0.05

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        images, targets = batch
        raw = model.forward_raw(self.prepare(images))
        objects = instances.instance_targets(
            [{k: v.to(images.device) for k, v in t.items()} for t in targets], tuple(raw["heatmap"].shape[-2:])
        )
        masks = instances.mask_loss(raw, objects)
        return self.detection_loss(model, raw, targets) + model.config.mask_loss_weight * masks

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        found = InstanceMasks([], [], [])
        truth_masks, truth_labels = [], []
        for images, targets in loader:
            _, scores, labels, masks = model(self.prepare(images))
            masks = masks >= 0.5
            for i, target in enumerate(targets):
                keep = scores[i] > self.score_floor
                found.masks.append(masks[i][keep].numpy())
                found.labels.append(labels[i][keep].numpy())
                found.scores.append(scores[i][keep].numpy())
                truth_masks.append(target["masks"].numpy().astype(bool))
                truth_labels.append(target["labels"].numpy())
        return mask_average_precision(found, truth_masks, truth_labels, len(self.class_names))
