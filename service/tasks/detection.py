"""Object detection: boxes in the original image's pixels, with labels and scores.

The model's outputs are `boxes` (n, K, 4) xyxy in the pixels of its input, `scores` (n, K) and
`labels` (n, K) class indices; each image's boxes are scaled back by its own resize factors.
"""

from __future__ import annotations

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


def detect(
    outputs: dict[str, np.ndarray],
    manifest: Manifest,
    original_sizes: list[tuple[int, int]],
    score_threshold: float,
    k: int,
) -> list[dict[str, object]]:
    """Per image (`original_sizes` = (width, height) each): the detections scoring at least
    `score_threshold`, best first, at most `k`, clipped to the image (`ImageDetections`)."""
    model_height, model_width = model_image_size(manifest)
    results = []
    for boxes, scores, labels, (width, height) in zip(
        outputs["boxes"], outputs["scores"], outputs["labels"], original_sizes, strict=True
    ):
        scale = np.array([width / model_width, height / model_height] * 2, dtype=np.float64)
        limits = np.array([width, height] * 2, dtype=np.float64)
        keep = (scores >= score_threshold) & (labels >= 0) & (labels < len(manifest.labels))
        order = [i for i in np.argsort(-scores, kind="stable") if keep[i]][:k]
        detections = [
            {
                "box": [float(v) for v in np.clip(boxes[i].astype(np.float64) * scale, 0, limits)],
                "label": manifest.labels[int(labels[i])],
                "index": int(labels[i]),
                "score": float(scores[i]),
            }
            for i in order
        ]
        results.append({"width": width, "height": height, "detections": detections})
    return results
