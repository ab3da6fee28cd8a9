"""The canonical form of a point cloud: a fixed number of points, centred, unit max radius.

Generated and loaded clouds go through the same two steps, so a model sees the same kind of
input whatever the source; a service feeding such a model must normalise the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def normalize_cloud(points: np.ndarray) -> np.ndarray:
    """float32 (P, 3): `points` moved to zero mean and scaled to a maximum radius of 1."""
    centred = points - points.mean(axis=0)
    radius = float(np.linalg.norm(centred, axis=1).max())
    return (centred / (radius if radius > 0 else 1.0)).astype(np.float32)


def choose_points(num_available: int, num_points: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `num_points` of `num_available` points: a random subset, or all of them plus
    random repeats when there are too few."""
    if num_available >= num_points:
        return np.sort(rng.choice(num_available, num_points, replace=False))
    extra = rng.choice(num_available, num_points - num_available, replace=True)
    return np.concatenate([np.arange(num_available), extra])


def canonical_cloud(points: np.ndarray, num_points: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`num_points` of the xyz columns of `points` (P, >= 3), normalised, and the indices of the
    points kept (to select per-point labels alike)."""
    kept = choose_points(len(points), num_points, rng)
    return normalize_cloud(points[kept, :3]), kept


def canonical_clouds(
    clouds: Sequence[np.ndarray], num_points: int, rngs: Iterable[np.random.Generator]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """`canonical_cloud` of each cloud (one rng each), stacked to (N, num_points, 3), and per
    cloud the indices of the points kept. There must be at least one cloud."""
    results = [canonical_cloud(cloud, num_points, rng) for cloud, rng in zip(clouds, rngs, strict=True)]
    return np.stack([points for points, _ in results]), [kept for _, kept in results]
