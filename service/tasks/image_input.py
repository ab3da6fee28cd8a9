"""Decoded images -> the image models' input tensor."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class ImageInputs:
    """The image models' one input, float32 (n, 3, H, W), made of decoded RGB images: each
    resized (bilinear, aspect ratio not kept, as in training) to the model's size, scaled to
    [0, 1] and normalised with the manifest's mean and std. Equal for every request of a model,
    so the images of a whole batch are stacked and normalised at once."""

    name: str
    size: tuple[int, int]  # (width, height)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, manifest: Manifest) -> ImageInputs:
        height, width = model_image_size(manifest)
        preprocessing = manifest.preprocessing
        mean, std = preprocessing.mean or (0.0, 0.0, 0.0), preprocessing.std or (1.0, 1.0, 1.0)
        return cls(manifest.inputs[0].name, (width, height), tuple(mean), tuple(std))  # type: ignore[arg-type]

    @property
    def signature(self) -> tuple[tuple[str, tuple[int, ...], str], ...]:
        """(input name, shape without the batch dim, dtype) of what it makes."""
        width, height = self.size
        return ((self.name, (3, height, width), np.dtype(np.float32).str),)

    def __call__(self, parts: list[list[Image.Image]]) -> dict[str, np.ndarray]:
        """The input of every image of `parts` (each request's images), in order."""
        return self.batch([image for part in parts for image in part])

    def batch(self, images: list[Image.Image]) -> dict[str, np.ndarray]:
        width, height = self.size
        mean = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1)
        pixels = np.stack([np.asarray(_resized(image, self.size)) for image in images])
        # In place, in one buffer: the same operations (and float32 roundings) as
        # ((pixels / 255) - mean) / std, without a temporary array per step.
        batch = np.empty((len(images), 3, height, width), np.float32)
        np.copyto(batch, pixels.transpose(0, 3, 1, 2))
        batch /= 255.0
        batch -= mean
        batch /= std
        return {self.name: batch}


def image_batch(images: list[Image.Image], manifest: Manifest) -> dict[str, np.ndarray]:
    """The model's one image input for `images` (`ImageInputs`)."""
    return ImageInputs.of(manifest).batch(images)


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` at `size` (bilinear). An image decoded much larger (for an overlay at its own
    size) is first reduced by an integer factor in boxes (Pillow's `reducing_gap`): a third of
    the time, within a few levels of the direct resize."""
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=_REDUCING_GAP)
