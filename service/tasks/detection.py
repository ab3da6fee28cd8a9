"""Object detection: boxes in the original image's pixels, with labels and scores.

The model's outputs are `boxes` (n, K, 4) xyxy in the pixels of its input, `scores` (n, K) and
`labels` (n, K) class indices; each image's boxes are scaled back by its own resize factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from easerve.artifacts.manifest import Manifest
from easerve.service.schemas import InferenceResponse
from easerve.service.tasks.image_input import model_image_size


class Detection(BaseModel):
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in the original image's pixels")
    label: str
    index: int = Field(description="class index")
    score: float


class ImageDetections(BaseModel):
    width: int
    height: int
    detections: list[Detection]


class DetectResponse(InferenceResponse):
    results: list[ImageDetections]


@dataclass(frozen=True)
class ImageScale:
    """How one image's detections map back to it: the factors from the model's input pixels to
    the image's, and the image's extent."""

    factors: np.ndarray
    limits: np.ndarray

    @classmethod
    def of(cls, manifest: Manifest, width: int, height: int) -> ImageScale:
        model_height, model_width = model_image_size(manifest)
        factors = np.array([width / model_width, height / model_height] * 2, dtype=np.float64)
        return cls(factors, np.array([width, height] * 2, dtype=np.float64))


def kept_slots(scores: np.ndarray, labels: np.ndarray, num_labels: int, score_threshold: float, k: int) -> list[int]:
    """The slots of one image's detections to report: scoring at least `score_threshold`, with
    a known label, best first, at most `k`."""
    keep = (scores >= score_threshold) & (labels >= 0) & (labels < num_labels)
    return [int(i) for i in np.argsort(-scores, kind="stable") if keep[i]][:k]


def detection_at(
    slot: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, manifest: Manifest, scale: ImageScale
) -> dict[str, object]:
    """One image's detection in slot `slot` (`Detection`), its box in the image's pixels."""
    box = np.clip(boxes[slot].astype(np.float64) * scale.factors, 0, scale.limits)
    return {
        "box": [float(v) for v in box],
        "label": manifest.labels[int(labels[slot])],
        "index": int(labels[slot]),
        "score": float(scores[slot]),
    }


def detect(
    outputs: dict[str, np.ndarray],
    manifest: Manifest,
    original_sizes: list[tuple[int, int]],
    score_threshold: float,
    k: int,
) -> list[dict[str, object]]:
    """Per image (`original_sizes` = (width, height) each): the detections scoring at least
    `score_threshold`, best first, at most `k`, clipped to the image (`ImageDetections`)."""
    results = []
    for boxes, scores, labels, (width, height) in zip(
        outputs["boxes"], outputs["scores"], outputs["labels"], original_sizes, strict=True
    ):
        scale = ImageScale.of(manifest, width, height)
        slots = kept_slots(scores, labels, len(manifest.labels), score_threshold, k)
        detections = [detection_at(slot, boxes, scores, labels, manifest, scale) for slot in slots]
        results.append({"width": width, "height": height, "detections": detections})
    return results
