"""Image classification: top-k labels with probabilities, per image."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from easerve.artifacts.manifest import Manifest
from easerve.service.schemas import InferenceResponse
from easerve.service.tasks.scores import LabelScore, top_k


class ImageClassification(BaseModel):
    top_k: list[LabelScore]


class ClassifyResponse(InferenceResponse):
    results: list[ImageClassification]


def classify(outputs: dict[str, np.ndarray], manifest: Manifest, k: int) -> list[ImageClassification]:
    """One result per image, from the model's logits (n, classes)."""
    logits = outputs[manifest.outputs[0].name]
    return [ImageClassification(top_k=top_k(row, manifest.labels, k)) for row in logits]
