"""Class logits -> probabilities -> the top-k labels (image and point cloud classification)."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel


class LabelScore(BaseModel):
    label: str
    index: int
    probability: float


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=axis, keepdims=True)


def top_k(logits: np.ndarray, labels: list[str], k: int) -> list[LabelScore]:
    """The `k` most probable classes of one logits vector, most probable first."""
    probabilities = softmax(logits.astype(np.float64))
    order = np.argsort(-probabilities, kind="stable")[: min(k, len(labels))]
    return [LabelScore(label=labels[i], index=int(i), probability=float(probabilities[i])) for i in order]
