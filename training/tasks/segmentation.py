"""Semantic segmentation: per-pixel cross-entropy (255 ignored); judged by mean IoU."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from easerve.artifacts.tasks import SEGMENTATION
from easerve.training import metrics
from easerve.training.tasks.base import Batch, Task


@dataclass
class SegmentationTask(Task):
    primary_metric: str = "miou"
    spec = SEGMENTATION

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        images, masks = batch
        return F.cross_entropy(model(self.prepare(images)), masks, ignore_index=metrics.IGNORE_INDEX)

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        confusion = metrics.ConfusionMatrix(len(self.class_names))
        for images, masks in loader:
            confusion.update(model(self.prepare(images)).argmax(1).numpy(), masks.numpy())
        return {"miou": confusion.mean_iou(), "pixel_accuracy": confusion.pixel_accuracy()}
