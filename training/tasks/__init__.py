"""The training tasks: one module per task family, each a `Task` subclass naming its spec.

A new task is a new module here, its name on the import line below and its class in
`TASK_TYPES`; the trainer, evaluation and export find it by the model's task.
"""

from __future__ import annotations

from typing import Any

from easerve.model_defs.registry import ModelEntry
from easerve.training.tasks import classification, detection, generation, instances, pointcloud, segmentation
from easerve.training.tasks.base import Phase, Task
from easerve.training.tasks.generation import DEFAULT_JUDGE

TASK_TYPES: dict[str, type[Task]] = {
    task.spec.name: task
    for task in (
        classification.ClassificationTask,
        segmentation.SegmentationTask,
        detection.DetectionTask,
        generation.GenerationTask,
        pointcloud.PointCloudClassificationTask,
        pointcloud.PointCloudSegmentationTask,
        instances.InstanceSegmentationTask,
    )
}


def task_for(entry: ModelEntry, class_names: list[str], options: dict[str, Any]) -> Task:
    """The training task of `entry`'s task for a data set with `class_names`; `options`: the run's
    task options (`judge`: the generation judge's folder)."""
    return TASK_TYPES[entry.task](entry, class_names, options)


__all__ = ["DEFAULT_JUDGE", "TASK_TYPES", "Phase", "Task", "task_for"]
