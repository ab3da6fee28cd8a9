"""Class scores: a label with its probability (image and point cloud classification), and softmax."""

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
