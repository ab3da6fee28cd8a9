"""Concrete shapes for a manifest's symbolic dimensions.

The service feeds image models at the manifest's `image_size` and point models at its
`num_points`, so those are the shapes to warm up at and to build engine profiles for (by the
service and by export alike).
"""

from __future__ import annotations

from easerve.artifacts.manifest import Preprocessing, TensorInfo

BATCH_DIM = "batch"


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
