"""Image classification: the base task as it is (cross-entropy, top-1 accuracy)."""

from __future__ import annotations

from easerve.artifacts.tasks import CLASSIFICATION
from easerve.training.tasks.base import Task


class ClassificationTask(Task):
    spec = CLASSIFICATION
