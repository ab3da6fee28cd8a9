"""The accuracy guard on reduced-precision graphs (INT8, FP16): refuse one whose task metric
drops too far below the FP32 graph's."""

from __future__ import annotations

import math

DEFAULT_MAX_DROP_POINTS = 2.0


class PrecisionRefused(RuntimeError):
    """A reduced-precision graph was not written; the message says why, with the figures."""


def drop_in_points(reference: float, reduced: float) -> float:
    """How far `reduced` falls below `reference`, in points (metrics are fractions in [0, 1],
    so 0.02 = 2 points; every primary task metric here is higher-is-better)."""
    return (reference - reduced) * 100


def check_metric_drop(variant: str, metric: str, reference: float, reduced: float, max_drop_points: float) -> None:
    """Raise PrecisionRefused if `reduced` is NaN or more than `max_drop_points` below `reference`."""
    drop = drop_in_points(reference, reduced)
    if math.isnan(reduced) or not drop <= max_drop_points:
        raise PrecisionRefused(
            f"{variant} refused: {metric} {reduced:.4f} against {reference:.4f} for FP32, a drop of "
            f"{drop:.2f} points (at most {max_drop_points:g} allowed)"
        )
