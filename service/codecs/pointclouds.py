"""Point clouds in: JSON `{"points": [[x, y, z], ...]}`, `.npy` files, ASCII/binary `.ply` files.

Every path ends in `checked_points`: float32 (P, 3), finite, 1 <= P <= max_points. Whatever a
client sends comes out as that array or a `ServiceError` (400, 413 or 422), and no file's header
decides an allocation: counts and shapes are checked against the bytes present and the limit first.
"""

from __future__ import annotations

import io
import math
import tokenize

import numpy as np
from pydantic import BaseModel, ValidationError

from easerve.service.codecs.ply import is_ply, parse_ply
from easerve.service.errors import BadRequest, InvalidInput, PayloadTooLarge, describe_validation_errors

_NPY_MAGIC = b"\x93NUMPY"
# What numpy's header reader raises on a malformed header (it parses a Python literal; its
# warning about Python 2 headers is here for when warnings are errors, as in some test runs).
_NPY_HEADER_ERRORS = (
    UserWarning,
    ValueError,
    TypeError,
    SyntaxError,
    KeyError,
    IndexError,
    OverflowError,
    RecursionError,
    EOFError,
    tokenize.TokenError,
)


class PointCloudBody(BaseModel):
    """The JSON body of the point cloud endpoints."""

    points: list[list[float]]


def checked_points(points: np.ndarray, max_points: int) -> np.ndarray:
    """`points` as float32 (P, 3). InvalidInput: wrong shape, non-numeric, empty, NaN, infinite or
    beyond float32's range; PayloadTooLarge: more than `max_points` points."""
    if points.dtype.kind not in "fiu":
        raise InvalidInput(f"point coordinates must be numbers, got dtype {points.dtype}")
    if points.ndim != 2 or points.shape[1] != 3:
        raise InvalidInput(f"points must be an (N, 3) array of x, y, z coordinates; got shape {list(points.shape)}")
    if points.shape[0] == 0:
        raise InvalidInput("the point cloud has no points")
    if points.shape[0] > max_points:
        raise PayloadTooLarge(f"{points.shape[0]} points is over the limit of {max_points}")
    with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 become inf, refused below
        points = points.astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(points).all(axis=1)))
    if bad:
        raise InvalidInput(f"{bad} point(s) have NaN or infinite coordinates (or beyond float32's range)")
    return points


def points_from_json(body: bytes, max_points: int) -> np.ndarray:
    """The cloud of a JSON body; InvalidInput names what is wrong with it."""
    try:
        parsed = PointCloudBody.model_validate_json(body)
    except ValidationError as error:
        errors = error.errors()
        if any(detail["type"] == "json_invalid" for detail in errors):  # not JSON at all: as the image routes
            raise BadRequest(f"malformed JSON body: {describe_validation_errors(errors)}") from None
        raise InvalidInput(f"invalid point cloud JSON: {describe_validation_errors(errors)}") from None
    if len(parsed.points) > max_points:
        raise PayloadTooLarge(f"{len(parsed.points)} points is over the limit of {max_points}")
    if any(len(point) != 3 for point in parsed.points):
        raise InvalidInput("every point must have exactly 3 coordinates [x, y, z]")
    return checked_points(np.asarray(parsed.points, dtype=np.float64).reshape(-1, 3), max_points)


def points_from_npy(data: bytes, max_points: int) -> np.ndarray:
    """The cloud in `.npy` bytes, read from its header first: nothing is allocated before the
    dtype, the shape, the bytes present and the point count are checked.

    BadRequest: not a .npy file, a malformed header, negative dimensions, a data size other than
    the header's shape needs, a pickled (object) array. InvalidInput: a structured or non-numeric
    dtype, a shape other than (N, 3) (and the other `checked_points` errors). PayloadTooLarge:
    more than `max_points` points.
    """
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:  # 3.0 is only written for structured dtypes with non-latin-1 field names, refused anyway
            raise BadRequest(f"unsupported .npy format version {version[0]}.{version[1]}; save it with numpy.save")
    except _NPY_HEADER_ERRORS as error:
        raise BadRequest(f"cannot read the .npy file header: {str(error)[:200]}") from None
    shape = tuple(int(side) for side in shape)  # plain ints: the header's literal may say True
    if dtype.hasobject:
        raise BadRequest("the .npy file holds Python objects (a pickle); send a numeric array")
    if dtype.names is not None or dtype.subdtype is not None or dtype.kind not in "fiu":
        raise InvalidInput(f"point coordinates must be numbers, got dtype {dtype}")
    if any(side < 0 for side in shape):
        raise BadRequest(f"the .npy header's shape {_shape_text(shape)} has a negative dimension")
    count = math.prod(shape)  # Python ints: no overflow whatever the header claims
    present = len(data) - stream.tell()
    if count * dtype.itemsize != present:
        raise BadRequest(
            f"the .npy header's shape {_shape_text(shape)} of {dtype} needs {count * dtype.itemsize} bytes of data, "
            f"the file has {present}"
        )
    if len(shape) != 2 or shape[1] != 3:
        raise InvalidInput(f"points must be an (N, 3) array of x, y, z coordinates; got shape {_shape_text(shape)}")
    if shape[0] > max_points:
        raise PayloadTooLarge(f"{shape[0]} points is over the limit of {max_points}")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=stream.tell())
    return checked_points(array.reshape(shape, order="F" if fortran_order else "C"), max_points)


def _shape_text(shape: tuple[int, ...]) -> str:
    text = str(list(shape))
    return text if len(text) <= 80 else text[:80] + "...]"


def points_from_file(data: bytes, max_points: int) -> np.ndarray:
    """The cloud in an uploaded file, `.npy` or `.ply`, told apart by their magic bytes."""
    if not data:
        raise BadRequest("empty point cloud file: 0 bytes")
    if data.startswith(_NPY_MAGIC):
        return points_from_npy(data, max_points)
    if is_ply(data):
        return checked_points(parse_ply(data, max_points), max_points)
    raise BadRequest("unrecognised point cloud file: expected .npy or .ply")
