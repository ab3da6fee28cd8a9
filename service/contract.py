"""What a model accepts, checked for every client tensor before it joins a batch.

A batch is shared by many clients, so one request's bad value must be refused on its own
instead of failing the batch (and everybody in it). The manifest says what each input is;
the limits bound what the server computes for one client. v1 routes build inputs that conform
by construction (decoded images and clouds, checked as they were decoded), so nothing checks
them again; v2 requests check their shapes before any data is converted, so a shape whose size
overflows or exceeds a limit never allocates, and their values once converted, on a worker.

It also says what running a request costs: the model's predicted peak working memory for the
request's items at the size the model runs them (`working_bytes`, from the manifest's memory
model, measured at export), which every inference route adds to the cost it admits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from easerve.artifacts.manifest import Manifest, TensorInfo
from easerve.artifacts.shapes import BATCH_DIM, POINTS_DIM, SPATIAL_DIMS, concrete_shape, items_and_positions
from easerve.service.errors import InvalidInput, PayloadTooLarge


@dataclass(frozen=True)
class InputLimits:
    """What one request may ask a model to compute."""

    max_batch_items: int  # rows of one request (images of a v1 request, or a v2 batch)
    max_model_pixels: int  # height x width of one image tensor
    max_model_points: int  # points of one cloud tensor

    def pixels_allowed(self, manifest: Manifest) -> int:
        """The model's own input size is always allowed, whatever the setting."""
        size = manifest.preprocessing.image_size
        return max(self.max_model_pixels, size[0] * size[1] if size else 0)

    def points_allowed(self, manifest: Manifest) -> int:
        return max(self.max_model_points, manifest.preprocessing.num_points or 0)


def working_bytes(manifest: Manifest, items: int, positions: int) -> int:
    """Predicted peak working memory of running `items` items of `positions` positions each, each
    item its own share (a batch of them measured less than the sum); 0 when the manifest has no
    memory model."""
    memory = manifest.memory
    return 0 if memory is None else items * memory.item_bytes(positions)


def tensors_working_bytes(manifest: Manifest, shapes: Mapping[str, Sequence[int]]) -> int:
    """`working_bytes` of the model's inputs of `shapes` (by input name): v2 requests (from
    their checked shapes) and the runner (from a batch's)."""
    return working_bytes(manifest, *items_and_positions(manifest.inputs, shapes))


def output_nbytes(manifest: Manifest, shapes: Mapping[str, Sequence[int]]) -> list[int] | None:
    """The bytes of each of the model's outputs for inputs of `shapes` (by input name), their
    symbolic dimensions taken from the inputs'; None when an output has a dimension no input
    gives."""
    sizes: dict[str, int] = {}
    for tensor in manifest.inputs:
        shape = shapes.get(tensor.name)
        if shape is not None:
            sizes |= {dim: size for dim, size in zip(tensor.shape, shape) if isinstance(dim, str)}
    if any(isinstance(dim, str) and dim not in sizes for tensor in manifest.outputs for dim in tensor.shape):
        return None
    return [
        math.prod(dim if isinstance(dim, int) else sizes[dim] for dim in tensor.shape) * np.dtype(tensor.dtype).itemsize
        for tensor in manifest.outputs
    ]


def served_working_bytes(manifest: Manifest, items: int) -> int | None:
    """`working_bytes` of `items` inputs at the size the v1 routes feed the model: images resized
    to the manifest's image_size, clouds sampled to its num_points, a fixed input's own size. None
    when the manifest leaves a size open (a cloud model without num_points takes each cloud's
    own count: charge `tensors_working_bytes` of the sampled cloud)."""
    try:
        shapes = {tensor.name: concrete_shape(tensor, manifest.preprocessing, items) for tensor in manifest.inputs}
    except ValueError:
        return None
    return tensors_working_bytes(manifest, shapes)


def check_shape(shape: Sequence[int], tensor: TensorInfo, manifest: Manifest, limits: InputLimits) -> None:
    """`shape` fits input `tensor` of `manifest` within `limits`: the model's rank, its fixed
    dimensions, a batch of 1..max_batch_items, spatial sizes that are positive multiples of the
    model's `input_multiple` within the pixel limit, 1..limit points. InvalidInput for what the
    model cannot take, PayloadTooLarge for sizes over a limit."""
    named = f"input {tensor.name!r} of {manifest.name}"
    if len(shape) != len(tensor.shape):
        raise InvalidInput(f"{named}: shape {list(shape)} has rank {len(shape)}, the model needs {tensor.shape}")
    sizes: dict[str, int] = {}
    for axis, (dim, want) in enumerate(zip(shape, tensor.shape, strict=True)):
        if isinstance(want, int):
            if dim != want:
                raise InvalidInput(f"{named}: dimension {axis} is {dim}, the model needs {want}")
        elif dim < 1:
            raise InvalidInput(f"{named}: shape {list(shape)} has {want} = {dim} (dimension {axis}); it must be >= 1")
        else:
            sizes[want] = dim
    batch = sizes.get(BATCH_DIM, 1)
    if batch > limits.max_batch_items:
        raise InvalidInput(f"{named}: batch size {batch} is outside 1..{limits.max_batch_items}")
    _check_spatial(sizes, manifest, limits, named)
    points = sizes.get(POINTS_DIM)
    if points is not None and points > limits.points_allowed(manifest):
        raise PayloadTooLarge(f"{named}: {points} points is over the limit of {limits.points_allowed(manifest)}")


def _check_spatial(sizes: dict[str, int], manifest: Manifest, limits: InputLimits, named: str) -> None:
    spatial = [sizes[name] for name in SPATIAL_DIMS if name in sizes]
    if not spatial:
        return
    multiple = manifest.preprocessing.input_multiple
    if multiple is not None and any(side % multiple for side in spatial):
        raise InvalidInput(f"{named}: height and width must be multiples of {multiple}, got {spatial}")
    pixels = math.prod(spatial)
    if pixels > limits.pixels_allowed(manifest):
        raise PayloadTooLarge(
            f"{named}: {pixels} pixels per image is over the limit of {limits.pixels_allowed(manifest)}"
        )


def check_values(name: str, array: np.ndarray, manifest: Manifest) -> None:
    """InvalidInput unless the client's floats are finite and its class labels (generators) within
    the model's classes. (Tensors the server builds itself are right by construction.)"""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInput(f"input {name!r} of {manifest.name} holds NaN or infinite values")
    if manifest.spec.request == "class" and array.dtype.kind in "iu":
        classes = len(manifest.labels)
        if array.size and (array.min() < 0 or array.max() >= classes):
            raise InvalidInput(
                f"input {name!r} of {manifest.name}: class labels must be in 0..{classes - 1}, "
                f"got {int(array.min())}..{int(array.max())}"
            )
