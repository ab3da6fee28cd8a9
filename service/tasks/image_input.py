"""Decoded images -> the image models' input tensor."""

from __future__ import annotations

import numpy as np
from PIL import Image

from easerve.artifacts.manifest import Manifest


def model_image_size(manifest: Manifest) -> tuple[int, int]:
    """(height, width) the network sees; ValueError if the manifest has none."""
    if manifest.preprocessing.image_size is None:
        raise ValueError(f"{manifest.name}: the manifest has no preprocessing.image_size")
    height, width = manifest.preprocessing.image_size
    return height, width


# Pillow reduces in boxes first when the image is over this many times the size it goes to.
_REDUCING_GAP = 3.0


def image_batch(images: list[Image.Image], manifest: Manifest) -> dict[str, np.ndarray]:
    """The model's one image input: float32 (n, 3, H, W), each RGB image resized (bilinear,
    aspect ratio not kept, as in training) to the manifest's size, scaled to [0, 1] and
    normalised with its mean and std."""
    height, width = model_image_size(manifest)
    preprocessing = manifest.preprocessing
    mean = np.asarray(preprocessing.mean or (0.0, 0.0, 0.0), np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(preprocessing.std or (1.0, 1.0, 1.0), np.float32).reshape(1, 3, 1, 1)
    size = (width, height)
    pixels = np.stack([np.asarray(_resized(image, size)) for image in images])
    # In place, in one buffer: the same operations (and float32 roundings) as
    # ((pixels / 255) - mean) / std, without a temporary array per step.
    batch = np.empty((len(images), 3, height, width), np.float32)
    np.copyto(batch, pixels.transpose(0, 3, 1, 2))
    batch /= 255.0
    batch -= mean
    batch /= std
    return {manifest.inputs[0].name: batch}


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` at `size` (bilinear). An image decoded much larger (for an overlay at its own
    size) is first reduced by an integer factor in boxes (Pillow's `reducing_gap`): a third of
    the time, within a few levels of the direct resize."""
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=_REDUCING_GAP)
