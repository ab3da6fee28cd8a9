"""Detection: the shapes of the first scene found, each by a box of the right class."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from easerve.loadtest.samples import SampleSet, SceneSample

MIN_BOX_IOU = 0.5
MIN_BOX_RECALL = 0.5  # of the scene's shapes, found with the right class at MIN_BOX_IOU


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None).prod()
    union = (a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter
    return float(inter / union) if union > 0 else 0.0


def shapes_found(scene: SceneSample, found: list[dict], also: Callable[[int, int], bool]) -> int:
    """The scene's shapes with an answer of the right class whose box has IoU >= MIN_BOX_IOU with
    the shape's and for which `also(shape index, answer index)` holds."""
    return sum(
        any(
            answer["label"] == label
            and _iou(box, np.asarray(answer["box"], np.float32)) >= MIN_BOX_IOU
            and also(shape, index)
            for index, answer in enumerate(found)
        )
        for shape, (box, label) in enumerate(zip(scene.boxes, scene.labels))
    )


def check_detect(answer: dict, samples: SampleSet) -> tuple[bool, str]:
    """Right when at least MIN_BOX_RECALL of the first scene's shapes are found (`shapes_found`)."""
    scene = samples.scenes[0]
    matched = shapes_found(scene, answer["results"][0]["detections"], lambda shape, index: True)
    recall = matched / len(scene.labels)
    return recall >= MIN_BOX_RECALL, f"{matched}/{len(scene.labels)} shapes found (IoU >= {MIN_BOX_IOU})"
