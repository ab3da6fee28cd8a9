"""Semantic segmentation: a class mask at the original resolution, class pixel fractions, and
optionally a colour overlay.

The logits (n, C, h, w) are resized bilinearly to the original image size before the argmax,
so edges follow the logits rather than blocky upsampled labels. The mask PNG's pixel values
are class indices (0 = first label, usually background).
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from easerve.artifacts.manifest import Manifest
from easerve.service.codecs.images import encode_png_base64
from easerve.service.schemas import InferenceResponse

# Values of the resized logits held at once (a band of rows x classes x width).
_BAND_VALUES = 8_000_000


class ImageSegmentation(BaseModel):
    width: int
    height: int
    mask_png: str = Field(description="base64 greyscale PNG; pixel value = class index")
    class_fractions: dict[str, float] = Field(description="fraction of the image's pixels per class")
    overlay_png: str | None = Field(default=None, description="base64 RGB PNG: the image with classes coloured")


class SegmentResponse(InferenceResponse):
    results: list[ImageSegmentation]


def class_colours(count: int) -> np.ndarray:
    """uint8 (count, 3) distinct colours; class 0 (background) black."""
    colours = [(0.0, 0.0, 0.0)] + [colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 1.0) for i in range(count - 1)]
    return (np.asarray(colours) * 255).round().astype(np.uint8)


def _linear_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output position: the two input positions it lies between and the weight of
    the second (half-pixel centres, `align_corners=False`; edges clamped)."""
    source = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
    low = np.floor(source).astype(np.int64)
    return low, np.minimum(low + 1, in_size - 1), (source - low).astype(np.float32)


def mask_at(logits: np.ndarray, width: int, height: int) -> np.ndarray:
    """(height, width) class indices (uint8, uint16 above 256 classes): the argmax of the
    (C, h, w) logits resized bilinearly to the image, in bands of rows so memory stays
    bounded whatever the image size and class count."""
    classes, in_height, in_width = logits.shape
    dtype = np.uint8 if classes <= 256 else np.uint16
    if (in_height, in_width) == (height, width):
        return logits.argmax(axis=0).astype(dtype)
    x_low, x_high, x_weight = _linear_taps(width, in_width)
    y_low, y_high, y_weight = _linear_taps(height, in_height)
    logits = logits.astype(np.float32)
    columns = logits[:, :, x_low] * (1 - x_weight) + logits[:, :, x_high] * x_weight  # (C, h, width)
    band = max(1, _BAND_VALUES // (classes * width))
    mask = np.empty((height, width), dtype)
    for top in range(0, height, band):
        rows = slice(top, top + band)
        weight = y_weight[rows, None]
        resized = columns[:, y_low[rows]] * (1 - weight) + columns[:, y_high[rows]] * weight
        mask[rows] = resized.argmax(axis=0)
    return mask


def _overlay(image: Image.Image, mask: np.ndarray, colours: np.ndarray, alpha: float) -> str:
    coloured = Image.fromarray(colours[mask])
    blended = Image.blend(image, coloured, alpha)
    foreground = Image.fromarray(((mask > 0) * 255).astype(np.uint8))
    return encode_png_base64(np.asarray(Image.composite(blended, image, foreground)))


def segment(
    outputs: dict[str, np.ndarray], manifest: Manifest, images: list[Image.Image], overlay: bool, alpha: float
) -> list[ImageSegmentation]:
    """One result per image (`images` are the decoded originals, for their sizes and overlays)."""
    logits = outputs[manifest.outputs[0].name]
    labels = manifest.labels
    colours = class_colours(len(labels))
    results = []
    for image_logits, image in zip(logits, images, strict=True):
        width, height = image.size
        mask = mask_at(image_logits, width, height)
        counts = np.bincount(mask.ravel(), minlength=len(labels))
        results.append(
            ImageSegmentation(
                width=width,
                height=height,
                mask_png=encode_png_base64(mask),
                class_fractions={label: float(counts[i]) / mask.size for i, label in enumerate(labels)},
                overlay_png=_overlay(image, mask, colours, alpha) if overlay else None,
            )
        )
    return results
