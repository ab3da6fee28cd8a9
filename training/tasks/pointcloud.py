"""Point cloud classification and part segmentation: raw xyz points in (no normalisation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from easerve.artifacts.tasks import POINTCLOUD_CLASSIFICATION, POINTCLOUD_SEGMENTATION
from easerve.training import metrics
from easerve.training.tasks.base import Batch, Task


@dataclass
class PointCloudClassificationTask(Task):
    spec = POINTCLOUD_CLASSIFICATION

    def prepare(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs

    def preprocessing(self, sample_input: torch.Tensor) -> dict[str, Any]:
        return {"kind": "points", "num_points": int(sample_input.shape[-2])}


@dataclass
class PointCloudSegmentationTask(PointCloudClassificationTask):
    primary_metric: str = "part_miou"
    spec = POINTCLOUD_SEGMENTATION

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        points, parts = batch
        return F.cross_entropy(model(points).flatten(0, 1), parts.flatten())

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        predictions, parts = [], []
        for points, labels in loader:
            predictions.append(model(points).argmax(-1).numpy())
            parts.append(labels.numpy())
        predicted, truth = np.concatenate(predictions), np.concatenate(parts)
        return {
            "part_miou": metrics.shape_part_miou(predicted, truth),
            "point_accuracy": metrics.top1_accuracy(predicted, truth),
        }
