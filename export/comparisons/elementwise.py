"""Answers compared slot by slot: every output's error element-wise, the agreement over the first
output (the same top-1 class, mask pixel class, point label or 8-bit pixel)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from easerve.export.comparisons import AnswerComparison, Compare, Comparison, abs_error

# Agreeing and compared units of the first output of both runtimes.
Agreement = Callable[[np.ndarray, np.ndarray], tuple[int, int]]


def _elementwise_errors(
    names: Sequence[str], reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]
) -> dict[str, float]:
    return {n: abs_error(r, c) for n, r, c in zip(names, reference, candidate, strict=True)}


def _same_argmax(axis: int) -> Agreement:
    def compare(reference: np.ndarray, candidate: np.ndarray) -> tuple[int, int]:
        if reference.shape != candidate.shape:
            return 0, reference.argmax(axis).size
        same = reference.argmax(axis) == candidate.argmax(axis)
        return int(same.sum()), same.size

    return compare


def _same_8bit_pixels(reference: np.ndarray, candidate: np.ndarray) -> tuple[int, int]:
    def to_8bit(image: np.ndarray) -> np.ndarray:
        return np.clip(np.round((image + 1) * 127.5), 0, 255)

    if reference.shape != candidate.shape:
        return 0, reference.size
    same = to_8bit(reference) == to_8bit(candidate)
    return int(same.sum()), same.size


def elementwise(agreement: Agreement) -> Compare:
    """Errors per output, slot by slot, and `agreement` over the first output."""

    def compare(names: Sequence[str], reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> Comparison:
        agreeing, compared = agreement(reference[0], candidate[0])
        return Comparison(_elementwise_errors(names, reference, candidate), agreeing, compared)

    return compare


LABELS = AnswerComparison(elementwise(_same_argmax(-1)), "same top-1 class per sample")
PIXEL_LABELS = AnswerComparison(elementwise(_same_argmax(1)), "same class per mask pixel")
POINT_LABELS = AnswerComparison(elementwise(_same_argmax(-1)), "same part label per point")
IMAGE = AnswerComparison(elementwise(_same_8bit_pixels), "same 8-bit value per generated pixel")
