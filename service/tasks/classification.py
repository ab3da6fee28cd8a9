"""Image classification: top-k labels with probabilities, per image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

from easerve.artifacts.manifest import Manifest
from easerve.service.schemas import InferenceResponse
from easerve.service.tasks.scores import LabelScore, softmax

Tensors = dict[str, np.ndarray]


class ImageClassification(BaseModel):
    top_k: list[LabelScore]


class ClassifyResponse(InferenceResponse):
    results: list[ImageClassification]


@dataclass(frozen=True)
class ClassProbabilities:
    """The batch-wide step of classification: the logits output (n, classes) as probabilities
    and each row's classes, most probable first, for every row at once."""

    output: str

    def __call__(self, outputs: Tensors) -> Tensors:
        probabilities = softmax(outputs[self.output].astype(np.float64))
        return {"probabilities": probabilities, "order": np.argsort(-probabilities, axis=-1, kind="stable")}


def ranked(prepared: Tensors, labels: list[str], k: int) -> list[dict[str, object]]:
    """One result per row of `ClassProbabilities`' tensors: the `k` most probable labels."""
    count = min(k, len(labels))
    return [
        {
            "top_k": [
                {"label": labels[index], "index": int(index), "probability": float(row[index])}
                for index in order[:count]
            ]
        }
        for row, order in zip(prepared["probabilities"], prepared["order"], strict=True)
    ]


def classify(outputs: Tensors, manifest: Manifest, k: int) -> list[dict[str, object]]:
    """One result per image, from the model's logits (n, classes) (`ImageClassification`)."""
    return ranked(ClassProbabilities(manifest.outputs[0].name)(outputs), manifest.labels, k)
