"""The task specs: what each task is, told once, torch-free, for every layer.

A spec says what a model of the task learns from, what a request to it carries and what its
answer holds. Each layer keeps its own plug-in per task (model family, training task, export
agreement, service endpoint, load-test workload, console renderer) in a registry, and chooses by
these kinds, never by a task's name: a new task is a new spec here plus its plug-ins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TaskName = Literal[
    "classification",
    "detection",
    "segmentation",
    "generation",
    "pointcloud-classification",
    "pointcloud-segmentation",
    "instance-segmentation",
]
# What a model learns from (and, but for generation, what a request carries).
Data = Literal["image", "pointcloud"]
# What a request carries: an image, a point cloud, or a class to draw (generation).
RequestKind = Literal["image", "pointcloud", "class"]
# What each training sample is labelled with, and what an answer holds.
Target = Literal["label", "pixel-labels", "boxes", "point-labels", "instance-masks"]
Answer = Literal["labels", "pixel-labels", "boxes", "image", "point-labels", "instance-masks"]
# Which of the bundled sample inputs (loadtest/samples) suits a request of the task.
SampleSet = Literal["images", "scenes", "clouds"]


@dataclass(frozen=True)
class TaskSpec:
    name: TaskName
    title: str
    data: Data
    request: RequestKind
    target: Target
    answer: Answer
    # The v1 route; its last part names the endpoint ("classify", "pointcloud-classify").
    path: str
    samples: SampleSet | None
    # Whether an answer can come with the image, what was found drawn on it (`overlay=true`).
    overlay: bool = False

    @property
    def endpoint(self) -> str:
        return self.path.removeprefix("/v1/").replace("/", "-")


CLASSIFICATION = TaskSpec(
    "classification", "Image classification", "image", "image", "label", "labels", "/v1/classify", "images"
)
SEGMENTATION = TaskSpec(
    "segmentation",
    "Semantic segmentation",
    "image",
    "image",
    "pixel-labels",
    "pixel-labels",
    "/v1/segment",
    "scenes",
    overlay=True,
)
DETECTION = TaskSpec("detection", "Object detection", "image", "image", "boxes", "boxes", "/v1/detect", "scenes")
GENERATION = TaskSpec(
    "generation", "Class-conditional generation", "image", "class", "label", "image", "/v1/generate", None
)
POINTCLOUD_CLASSIFICATION = TaskSpec(
    "pointcloud-classification",
    "Point cloud classification",
    "pointcloud",
    "pointcloud",
    "label",
    "labels",
    "/v1/pointcloud/classify",
    "clouds",
)
POINTCLOUD_SEGMENTATION = TaskSpec(
    "pointcloud-segmentation",
    "Point cloud part segmentation",
    "pointcloud",
    "pointcloud",
    "point-labels",
    "point-labels",
    "/v1/pointcloud/segment",
    "clouds",
)
INSTANCE_SEGMENTATION = TaskSpec(
    "instance-segmentation",
    "Instance segmentation",
    "image",
    "image",
    "instance-masks",
    "instance-masks",
    "/v1/segment/instances",
    "scenes",
    overlay=True,
)

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        CLASSIFICATION,
        DETECTION,
        SEGMENTATION,
        GENERATION,
        POINTCLOUD_CLASSIFICATION,
        POINTCLOUD_SEGMENTATION,
        INSTANCE_SEGMENTATION,
    )
}


def task_spec(name: str) -> TaskSpec:
    """The spec of task `name`; KeyError lists the known tasks."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None
