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

from artifacts.manifest import Manifest
from service.codecs.images import encode_png_base64
from service.schemas import InferenceResponse


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


def _mask_at(logits: np.ndarray, width: int, height: int) -> np.ndarray:
    if logits.shape[1:] == (height, width):
        return logits.argmax(axis=0).astype(np.uint8)
    resized = np.stack([
        np.asarray(Image.fromarray(channel.astype(np.float32)).resize((width, height), Image.Resampling.BILINEAR))
        for channel in logits
    ])
    return resized.argmax(axis=0).astype(np.uint8)


def _overlay(image: Image.Image, mask: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float32)
    coloured = colours[mask].astype(np.float32)
    blend = np.where((mask > 0)[..., None], (1 - alpha) * pixels + alpha * coloured, pixels)
    return blend.round().clip(0, 255).astype(np.uint8)


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
        mask = _mask_at(image_logits, width, height)
        counts = np.bincount(mask.ravel(), minlength=len(labels))
        results.append(ImageSegmentation(
            width=width,
            height=height,
            mask_png=encode_png_base64(mask),
            class_fractions={label: float(counts[i]) / mask.size for i, label in enumerate(labels)},
            overlay_png=encode_png_base64(_overlay(image, mask, colours, alpha)) if overlay else None,
        ))
    return results
