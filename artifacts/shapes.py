"""Concrete shapes for a manifest's symbolic dimensions.

The service feeds image models at the manifest's `image_size` and point models at its
`num_points`, so those are the shapes to warm up at and to build engine profiles for (by the
service and by export alike).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from easerve.artifacts.manifest import Preprocessing, TensorInfo
from easerve.artifacts.memory_model import PositionKind

BATCH_DIM = "batch"
SPATIAL_DIMS = ("height", "width")
POINTS_DIM = "points"


def symbolic_dims(preprocessing: Preprocessing) -> dict[str, int]:
    """The value the service gives each symbolic dimension name (except the batch)."""
    dims: dict[str, int] = {}
    if preprocessing.image_size is not None:
        dims["height"], dims["width"] = preprocessing.image_size
    if preprocessing.num_points is not None:
        dims["points"] = preprocessing.num_points
    return dims


def concrete_shape(tensor: TensorInfo, preprocessing: Preprocessing, batch: int) -> tuple[int, ...]:
    """`tensor`'s shape with `batch` and the preprocessing's sizes filled in; ValueError for a
    symbolic dimension the manifest gives no size for."""
    sizes = {BATCH_DIM: batch, **symbolic_dims(preprocessing)}
    shape = []
    for dim in tensor.shape:
        if isinstance(dim, int):
            shape.append(dim)
        elif dim in sizes:
            shape.append(sizes[dim])
        else:
            raise ValueError(f"tensor {tensor.name!r}: no size known for dimension {dim!r}")
    return tuple(shape)


def position_kind(inputs: Sequence[TensorInfo]) -> PositionKind:
    """What a model's input size counts: pixels (symbolic height/width), points, or fixed."""
    dims = {dim for tensor in inputs for dim in tensor.shape if isinstance(dim, str)}
    if POINTS_DIM in dims:
        return "points"
    return "pixels" if dims & set(SPATIAL_DIMS) else "fixed"


def items_and_positions(inputs: Sequence[TensorInfo], shapes: Mapping[str, Sequence[int]]) -> tuple[int, int]:
    """(items, positions of one item) of tensors of `shapes` fed to `inputs`: the batch size and
    the product of the height and width (or the points) an item has; 1 position when the input
    has one size. Inputs missing from `shapes` are left out."""
    items, positions = 1, 1
    for tensor in inputs:
        shape = shapes.get(tensor.name)
        if shape is None:
            continue
        sizes = {dim: size for dim, size in zip(tensor.shape, shape, strict=False) if isinstance(dim, str)}
        items = max(items, sizes.get(BATCH_DIM, 1))
        named = [sizes[dim] for dim in (*SPATIAL_DIMS, POINTS_DIM) if dim in sizes]
        if named:
            positions = max(positions, math.prod(named))
    return items, positions
