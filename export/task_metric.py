"""A task's own metric (top-1, mIoU, mAP@0.5, ...) computed on an exported graph, by the same
`Task.evaluate` the trainer uses on the PyTorch model."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from easerve.export.held_out import loader
from easerve.export.ort_model import OrtModel
from easerve.model_defs.registry import ModelEntry
from easerve.training.checkpoint import CheckpointInfo
from easerve.training.tasks import task_for

EVAL_BATCH = 32


def primary_metric(entry: ModelEntry, info: CheckpointInfo) -> str:
    """The name of the metric that judges this model's task (e.g. "accuracy", "miou")."""
    return task_for(entry, list(info.class_names), {}).primary_metric


def evaluate_graph(
    path: Path,
    entry: ModelEntry,
    info: CheckpointInfo,
    dataset: Dataset,
    judge: Path | None = None,
    threads: int | None = None,
) -> dict[str, float]:
    """The task's metrics of the graph at `path` on `dataset`. Generation needs `judge`, the
    shapes classifier checkpoint; without it the result is empty."""
    graph = OrtModel(path, threads)
    task = task_for(entry, list(info.class_names), {"judge": judge})
    model = task.graph_model(graph)
    with torch.no_grad():
        return task.evaluate(model, loader(entry, dataset, EVAL_BATCH))
