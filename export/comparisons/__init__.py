"""How the outputs of two runtimes are compared, one module per kind of answer
(`artifacts.tasks`): `elementwise` (labels, pixel and point labels, generated images),
`detections` (boxes), `instances` (boxes with masks).

Each module declares its `AnswerComparison`: the function that compares one batch of outputs and
the unit its agreement counts. `export.parity` registers them by answer kind and runs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Comparison:
    """Accumulated over batches: worst absolute error per output, and agreeing / compared units."""

    max_abs_error: dict[str, float] = field(default_factory=dict)
    agreeing: int = 0
    compared: int = 0

    def add(self, other: Comparison) -> None:
        for name, error in other.max_abs_error.items():
            self.max_abs_error[name] = max(self.max_abs_error.get(name, 0.0), error)
        self.agreeing += other.agreeing
        self.compared += other.compared

    @property
    def agreement(self) -> float:
        return self.agreeing / self.compared if self.compared else 1.0


# Output names, the reference runtime's outputs and the candidate's, in the graph's output order.
Compare = Callable[[Sequence[str], Sequence[np.ndarray], Sequence[np.ndarray]], Comparison]


@dataclass(frozen=True)
class AnswerComparison:
    """One answer kind's comparison: `compare` measures a batch, `unit` says what its agreement
    counts (the manifest's parity metric)."""

    compare: Compare
    unit: str


def abs_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The largest absolute difference of two arrays; infinite when their shapes differ or a value
    is NaN."""
    if reference.shape != candidate.shape:
        return math.inf
    error = float(np.max(np.abs(reference.astype(np.float64) - candidate.astype(np.float64)), initial=0.0))
    return math.inf if math.isnan(error) else error
