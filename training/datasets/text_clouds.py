"""Reading point clouds stored as text, one point per line (`x y z ...` or `x,y,z,...`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from easerve.training.datasets.errors import DatasetError


def read_text_cloud(path: Path, delimiter: str | None, min_columns: int) -> np.ndarray:
    """float32 (P, C) points of the text file at `path`, C >= `min_columns`, at least one point."""
    try:
        points = np.loadtxt(path, delimiter=delimiter, dtype=np.float32, ndmin=2)
    except FileNotFoundError:
        raise DatasetError(path, "point file not found") from None
    except ValueError as error:
        raise DatasetError(path, f"not a table of numbers ({error})") from error
    if points.shape[0] == 0 or points.shape[1] < min_columns:
        reason = f"expected points with at least {min_columns} columns, got shape {points.shape}"
        raise DatasetError(path, reason)
    if not np.isfinite(points).all():
        raise DatasetError(path, "has non-finite coordinates")
    return points
