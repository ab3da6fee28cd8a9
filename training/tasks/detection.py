"""Object detection: the CenterNet loss (`model_defs.detection`); judged by mAP at IoU 0.5."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from easerve.artifacts.tasks import DETECTION
from easerve.model_defs import detection
from easerve.training import metrics
from easerve.training.tasks.base import Batch, Task


@dataclass
class DetectionTask(Task):
    primary_metric: str = "map50"
    spec = DETECTION
    entry_points = ("forward_raw",)
    # Detections scoring less are left out of the evaluation (they only lengthen its lists).
    score_floor: ClassVar[float] = 0.01

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        images, targets = batch
        raw = model.forward_raw(self.prepare(images))
        return self.detection_loss(model, raw, targets)

    def detection_loss(self, model: nn.Module, raw: dict[str, torch.Tensor], targets: list[dict]) -> torch.Tensor:
        heatmap_size = tuple(raw["heatmap"].shape[-2:])
        per_image = [
            detection.centernet_targets(
                t["boxes"].cpu(), t["labels"].cpu(), heatmap_size, model.config.num_classes, detection.OUTPUT_STRIDE
            )
            for t in targets
        ]
        device = raw["heatmap"].device
        stacked = {k: torch.stack([t[k] for t in per_image]).to(device) for k in per_image[0]}
        return detection.centernet_loss(raw, stacked, model.config.size_loss_weight, model.config.offset_loss_weight)[
            "loss"
        ]

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        found = metrics.Detections([], [], [])
        truth_boxes, truth_labels = [], []
        for images, targets in loader:
            boxes, scores, labels = model(self.prepare(images))
            for i, target in enumerate(targets):
                keep = scores[i] > self.score_floor
                found.boxes.append(boxes[i][keep].numpy())
                found.scores.append(scores[i][keep].numpy())
                found.labels.append(labels[i][keep].numpy())
                truth_boxes.append(target["boxes"].numpy())
                truth_labels.append(target["labels"].numpy())
        score = metrics.mean_average_precision_50(found, truth_boxes, truth_labels, len(self.class_names))
        return {"map50": score}
