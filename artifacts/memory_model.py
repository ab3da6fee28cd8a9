"""A model's peak working memory as a function of its input size, measured at export.

One item (a batch of one) of `n` positions needs a + b·n + c·n² bytes beyond the loaded session
(`MemoryModel.item_bytes`): n counts the pixels of an image (height x width of the tensor the
network sees), the points of a cloud, or nothing for a model whose input has one size (only the
constant counts). External Attention comes out about linear in n; self-attention's attention
matrices make it quadratic. Export measures it (`easerve.export.memory_profile`) and writes it to
the manifest; the service charges it to a request's admitted cost.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

# What n counts.
PositionKind = Literal["pixels", "points", "fixed"]


class MemoryModel(BaseModel):
    """Peak working memory of one item: constant + per_position·n + per_position_squared·n² bytes."""

    positions: PositionKind = Field(description="what n counts: pixels (H x W), points, or fixed (one input size)")
    constant_bytes: float = Field(ge=0)
    bytes_per_position: float = Field(ge=0)
    bytes_per_position_squared: float = Field(ge=0)
    sizes: list[int] = Field(description="the n measured, in the order measured")
    measured_bytes: list[int] = Field(description="peak working memory measured at each size")
    method: str = Field(default="", description="how the sizes were measured and the curve fitted")

    def item_bytes(self, positions: int) -> int:
        """Predicted peak working memory of one item of `positions` positions (bytes)."""
        n = float(positions)
        return math.ceil(self.constant_bytes + self.bytes_per_position * n + self.bytes_per_position_squared * n * n)


FIT_METHOD = (
    "least squares on relative error with non-negative coefficients, then scaled up to the largest "
    "measured/predicted ratio so that no measured size is predicted below what it needed"
)


def _least_squares(design: np.ndarray, target: np.ndarray, columns: Sequence[int]) -> np.ndarray | None:
    """Coefficients using only `columns` (the others 0); None if any is negative."""
    coefficients = np.zeros(design.shape[1])
    if columns:
        solution, *_ = np.linalg.lstsq(design[:, list(columns)], target, rcond=None)
        if (solution < 0).any():
            return None
        coefficients[list(columns)] = solution
    return coefficients


def fit_memory_model(positions: PositionKind, sizes: Sequence[int], measured: Sequence[int], how: str) -> MemoryModel:
    """The a + b·n + c·n² curve through the `measured` bytes at `sizes`, every coefficient >= 0.

    Non-negative least squares on relative error, exactly: with three coefficients every subset
    of them is solved and the best feasible one kept. Then the curve is scaled up by its largest
    shortfall, so that it is an upper envelope of what was measured. With one size (or a fixed
    input size) only the constant is fitted.
    """
    if len(sizes) != len(measured) or not sizes:
        raise ValueError("need one measurement per size, at least one")
    n = np.asarray(sizes, dtype=np.float64)
    target = np.asarray(measured, dtype=np.float64)
    weights = 1.0 / np.maximum(target, 1.0)
    degree = 3 if len(set(sizes)) >= 3 and positions != "fixed" else (2 if len(set(sizes)) == 2 else 1)
    design = np.stack([np.ones_like(n), n, n * n], axis=1)[:, :degree] * weights[:, None]
    goal = target * weights
    best, best_error = np.zeros(3), math.inf
    for count in range(1, degree + 1):
        for columns in itertools.combinations(range(degree), count):
            coefficients = _least_squares(design, goal, columns)
            if coefficients is None:
                continue
            error = float(((design @ coefficients - goal) ** 2).sum())
            if error < best_error:
                best, best_error = np.pad(coefficients, (0, 3 - degree)), error
    predicted = best[0] + best[1] * n + best[2] * n * n
    scale = max(1.0, float((target / np.maximum(predicted, 1e-9)).max()))
    a, b, c = (float(value) * scale for value in best)
    return MemoryModel(
        positions=positions,
        constant_bytes=a,
        bytes_per_position=b,
        bytes_per_position_squared=c,
        sizes=list(sizes),
        measured_bytes=list(measured),
        method=f"{how}; {FIT_METHOD}",
    )
