"""Point clouds in: JSON `{"points": [[x, y, z], ...]}`, `.npy` files, ASCII/binary `.ply` files.

Every path ends in `checked_points`: float32 (P, 3), finite, 1 <= P <= max_points.
"""

from __future__ import annotations

import io

import numpy as np
from pydantic import BaseModel, ValidationError

from easerve.service.codecs.ply import is_ply, parse_ply
from easerve.service.errors import BadRequest, InvalidInput, PayloadTooLarge, describe_validation_errors

_NPY_MAGIC = b"\x93NUMPY"


class PointCloudBody(BaseModel):
    """The JSON body of the point cloud endpoints."""

    points: list[list[float]]


def checked_points(points: np.ndarray, max_points: int) -> np.ndarray:
    """`points` as float32 (P, 3). InvalidInput: wrong shape, non-numeric, empty, NaN or
    infinite; PayloadTooLarge: more than `max_points` points."""
    if points.dtype.kind not in "fiu":
        raise InvalidInput(f"point coordinates must be numbers, got dtype {points.dtype}")
    if points.ndim != 2 or points.shape[1] != 3:
        raise InvalidInput(f"points must be an (N, 3) array of x, y, z coordinates; got shape {list(points.shape)}")
    if points.shape[0] == 0:
        raise InvalidInput("the point cloud has no points")
    if points.shape[0] > max_points:
        raise PayloadTooLarge(f"{points.shape[0]} points is over the limit of {max_points}")
    points = points.astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(points).all(axis=1)))
    if bad:
        raise InvalidInput(f"{bad} point(s) have NaN or infinite coordinates")
    return points


def points_from_json(body: bytes, max_points: int) -> np.ndarray:
    """The cloud of a JSON body; InvalidInput names what is wrong with it."""
    try:
        parsed = PointCloudBody.model_validate_json(body)
    except ValidationError as error:
        raise InvalidInput(f"invalid point cloud JSON: {describe_validation_errors(error.errors())}") from None
    if len(parsed.points) > max_points:
        raise PayloadTooLarge(f"{len(parsed.points)} points is over the limit of {max_points}")
    if any(len(point) != 3 for point in parsed.points):
        raise InvalidInput("every point must have exactly 3 coordinates [x, y, z]")
    return checked_points(np.asarray(parsed.points, dtype=np.float64).reshape(-1, 3), max_points)


def points_from_npy(data: bytes, max_points: int) -> np.ndarray:
    """The cloud in `.npy` bytes (no pickles: object arrays are refused)."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise BadRequest(f"cannot read the .npy file: {error}") from None
    if not isinstance(array, np.ndarray):
        raise BadRequest("expected a .npy file holding one array")
    return checked_points(array, max_points)


def points_from_file(data: bytes, max_points: int) -> np.ndarray:
    """The cloud in an uploaded file, `.npy` or `.ply`, told apart by their magic bytes."""
    if not data:
        raise BadRequest("empty point cloud file: 0 bytes")
    if data.startswith(_NPY_MAGIC):
        return points_from_npy(data, max_points)
    if is_ply(data):
        return checked_points(parse_ply(data, max_points), max_points)
    raise BadRequest("unrecognised point cloud file: expected .npy or .ply")
