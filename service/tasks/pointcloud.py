"""Point cloud classification and part segmentation, for clouds of any size.

A cloud is brought to the model's `num_points` the way the training data was: a random subset
(or all points plus random repeats when there are too few), centred on its mean and scaled to a
maximum radius of 1. The subset is drawn from a fixed seed, so the same cloud gets the same
answer. Part labels come back for every input point: each point takes the label of its nearest
point in the subset (itself, when it was in it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from easerve.artifacts.manifest import Manifest
from easerve.service.schemas import InferenceResponse
from easerve.service.tasks.scores import LabelScore

SAMPLING_SEED = 0
# Rows of the (rows x num_points) distance matrix computed at once when mapping parts back.
_NEAREST_CHUNK = 4096


class PointCloudClassifyResponse(InferenceResponse):
    num_points: int = Field(description="points in the request's cloud")
    top_k: list[LabelScore]


class PointCloudSegmentResponse(InferenceResponse):
    num_points: int
    parts: list[str] = Field(description="one part label per input point, in input order")


@dataclass(frozen=True)
class SampledCloud:
    """The model's input for one cloud, and what maps its outputs back to the input points."""

    inputs: dict[str, np.ndarray]
    kept: np.ndarray  # (num_points,) indices of the input points fed to the model
    centre: np.ndarray
    radius: float


def _choose_points(available: int, wanted: int, rng: np.random.Generator) -> np.ndarray:
    if available >= wanted:
        return np.sort(rng.choice(available, wanted, replace=False))
    return np.concatenate([np.arange(available), rng.choice(available, wanted - available, replace=True)])


def sample_cloud(points: np.ndarray, manifest: Manifest) -> SampledCloud:
    """`points` (P, 3) resampled to the manifest's num_points and normalised, batch of one."""
    wanted = manifest.preprocessing.num_points or len(points)
    kept = _choose_points(len(points), wanted, np.random.default_rng(SAMPLING_SEED))
    chosen = points[kept].astype(np.float64)
    centre = chosen.mean(axis=0)
    radius = float(np.linalg.norm(chosen - centre, axis=1).max()) or 1.0
    normalised = ((chosen - centre) / radius).astype(np.float32)
    return SampledCloud(inputs={manifest.inputs[0].name: normalised[None]}, kept=kept, centre=centre, radius=radius)


def nearest_kept(points: np.ndarray, cloud: SampledCloud) -> np.ndarray:
    """For each input point, the position in `cloud.kept` of its nearest kept point: its own
    position when it was kept; only the points left out are searched for."""
    nearest = np.full(len(points), -1, dtype=np.int64)
    kept, first = np.unique(cloud.kept, return_index=True)  # a point kept twice: its first position
    nearest[kept] = first
    left_out = np.flatnonzero(nearest < 0)
    references = (points[cloud.kept].astype(np.float64) - cloud.centre) / cloud.radius
    reference_norms = (references**2).sum(axis=1)
    for start in range(0, len(left_out), _NEAREST_CHUNK):
        rows = left_out[start : start + _NEAREST_CHUNK]
        queries = (points[rows].astype(np.float64) - cloud.centre) / cloud.radius
        nearest[rows] = (reference_norms[None, :] - 2.0 * queries @ references.T).argmin(axis=1)
    return nearest


def segment_cloud(
    outputs: dict[str, np.ndarray], manifest: Manifest, points: np.ndarray, cloud: SampledCloud
) -> list[str]:
    """One part label per input point, from the model's (1, num_points, parts) logits."""
    predicted = outputs[manifest.outputs[0].name][0].argmax(axis=-1)
    if len(points) <= len(cloud.kept):
        # The first P kept indices are the input points themselves, in order.
        per_point = predicted[: len(points)]
    else:
        per_point = predicted[nearest_kept(points, cloud)]
    return np.asarray(manifest.labels)[per_point].tolist()
