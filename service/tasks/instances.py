"""Instance segmentation: per object its class, score, box and mask in the original image's
pixels, and optionally a colour overlay.

The model's outputs are the detector's `boxes`, `scores` and `labels` (see `detection`) and
`masks` (n, K, h, w), each object's probability map in the pixels of the model's input. A mask
is that map resized bilinearly to the original image and cut at 0.5; only the rows and columns
around the map's cells at or above 0.5 are resized (no other pixel can reach 0.5). Masks are COCO
run-length encodings by default (`{"size": [height, width], "counts": ...}`, decoded by
pycocotools' `mask.decode` and every COCO tool) or, on request, a 1-bit PNG each.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask
from pydantic import BaseModel, Field

from easerve.artifacts.manifest import Manifest
from easerve.service.codecs.images import DecodedImage, encode_png_base64
from easerve.service.deadline import Deadline
from easerve.service.schemas import InferenceResponse
from easerve.service.tasks.detection import Detection, ImageScale, detection_at, kept_slots
from easerve.service.tasks.segmentation import Overlay

MaskFormat = Literal["rle", "png"]
MASK_THRESHOLD = 0.5
# Bytes per original pixel held while one mask is made (its region resized as float32, the
# full-size mask in Fortran order for the encoder), and per overlay pixel while it is drawn.
_MASK_BYTES_PER_PIXEL = 6
_OVERLAY_BYTES_PER_PIXEL = 16


class CocoRLE(BaseModel):
    size: tuple[int, int] = Field(description="height, width")
    counts: str = Field(description="COCO compressed run-length encoding (column-major)")


class Instance(Detection):
    area: int = Field(description="pixels of the mask")
    mask: CocoRLE | None = Field(default=None, description="the mask as COCO RLE (mask_format=rle)")
    mask_png: str | None = Field(default=None, description="the mask as a base64 1-bit PNG (mask_format=png)")


class ImageInstances(BaseModel):
    width: int
    height: int
    instances: list[Instance]
    overlay_png: str | None = Field(
        default=None, description="base64 RGB PNG: the image with each instance coloured, boxed and labelled"
    )


class InstancesResponse(InferenceResponse):
    results: list[ImageInstances]


def instance_bytes(width: int, height: int, overlay_pixels: int) -> int:
    """Estimated peak working memory of `segment_instances` for one image."""
    return _MASK_BYTES_PER_PIXEL * width * height + _OVERLAY_BYTES_PER_PIXEL * overlay_pixels


def instance_colours(count: int) -> np.ndarray:
    """uint8 (count, 3) colours, neighbours far apart in hue."""
    colours = [colorsys.hsv_to_rgb((i * 0.618034 + 0.1) % 1.0, 0.8, 1.0) for i in range(count)]
    return (np.asarray(colours).reshape(-1, 3) * 255).round().astype(np.uint8)


@dataclass(frozen=True)
class MaskPlacement:
    """Where a mask lies in an image: its rows and columns, and the pixels there that are in it."""

    rows: slice
    columns: slice
    pixels: np.ndarray

    def full(self, height: int, width: int) -> np.ndarray:
        """The whole (height, width) uint8 mask, column-major (as the RLE encoder reads it)."""
        mask = np.zeros((height, width), np.uint8, order="F")
        mask[self.rows, self.columns] = self.pixels
        return mask


def place_mask(probabilities: np.ndarray, width: int, height: int) -> MaskPlacement:
    """The (h, w) probability map resized bilinearly (half-pixel centres) to width x height and
    cut at 0.5, computed only over the region its cells at or above 0.5 can reach."""
    in_height, in_width = probabilities.shape
    rows, columns = np.nonzero(probabilities >= MASK_THRESHOLD)
    if rows.size == 0:
        return MaskPlacement(slice(0, 0), slice(0, 0), np.zeros((0, 0), np.uint8))
    # An output pixel averages the cells under its filter (one cell either side of its centre when
    # the map is enlarged, the shrink factor when it is reduced): only pixels whose filter reaches
    # a cell at or above 0.5 can reach 0.5. One more cell covers the rounding of the region.
    reach = 1 + math.ceil(max(in_width / width, in_height / height, 1.0))
    top, bottom = max(rows.min() - reach, 0), min(rows.max() + 1 + reach, in_height)
    left, right = max(columns.min() - reach, 0), min(columns.max() + 1 + reach, in_width)
    x0, x1 = int(np.floor(left * width / in_width)), int(np.ceil(right * width / in_width))
    y0, y1 = int(np.floor(top * height / in_height)), int(np.ceil(bottom * height / in_height))
    source = Image.fromarray(probabilities.astype(np.float32))
    region = (x0 * in_width / width, y0 * in_height / height, x1 * in_width / width, y1 * in_height / height)
    resized = source.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=region)
    return MaskPlacement(slice(y0, y1), slice(x0, x1), (np.asarray(resized) >= MASK_THRESHOLD).astype(np.uint8))


def encode_rle(mask: np.ndarray) -> dict[str, object]:
    """COCO compressed RLE of a (height, width) uint8 mask."""
    encoded = coco_mask.encode(np.asfortranarray(mask))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def _draw_overlay(image: DecodedImage, placements: list[MaskPlacement], found: list[dict], overlay: Overlay) -> str:
    """The image at its overlay size with each instance's mask coloured, its box outlined and
    its label and score written at the box's corner."""
    width, height = image.original_size
    size = overlay.size(width, height)
    picture = image.image if image.image.size == size else image.image.resize(size, Image.Resampling.BILINEAR)
    pixels = np.asarray(picture).astype(np.float32)
    colours = instance_colours(len(found))
    scale_x, scale_y = size[0] / width, size[1] / height
    for placement, colour in zip(placements, colours, strict=True):
        mask = Image.fromarray(placement.full(height, width) * 255).resize(size, Image.Resampling.NEAREST)
        inside = np.asarray(mask) > 0
        pixels[inside] += overlay.alpha * (colour - pixels[inside])
    drawn = Image.fromarray(pixels.round().astype(np.uint8))
    pen = ImageDraw.Draw(drawn)
    for instance, colour in zip(found, colours, strict=True):
        x0, y0, x1, y1 = instance["box"]
        box = (x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y)
        pen.rectangle(box, outline=tuple(int(c) for c in colour))
        pen.text((box[0] + 2, box[1] + 1), f"{instance['label']} {instance['score']:.2f}", fill=tuple(colour))
    return encode_png_base64(np.asarray(drawn))


def segment_instances(
    outputs: dict[str, np.ndarray],
    manifest: Manifest,
    images: list[DecodedImage],
    score_threshold: float,
    k: int,
    mask_format: MaskFormat,
    overlay: Overlay | None,
    deadline: Deadline,
) -> list[dict[str, object]]:
    """One result per image (`ImageInstances`): the detections scoring at least
    `score_threshold`, best first, at most `k`, each with its mask at the image's original size,
    and with an `overlay` the image drawn with them. Checks the deadline before each mask."""
    results = []
    for boxes, scores, labels, masks, image in zip(
        outputs["boxes"], outputs["scores"], outputs["labels"], outputs["masks"], images, strict=True
    ):
        width, height = image.original_size
        scale = ImageScale.of(manifest, width, height)
        found, placements = [], []
        for slot in kept_slots(scores, labels, len(manifest.labels), score_threshold, k):
            deadline.check("drawing instance masks")
            placement = place_mask(masks[slot], width, height)
            full = placement.full(height, width)
            encoded = {"mask": encode_rle(full)} if mask_format == "rle" else {"mask_png": encode_png_base64(full > 0)}
            area = int(placement.pixels.sum())
            found.append(detection_at(slot, boxes, scores, labels, manifest, scale) | {"area": area} | encoded)
            placements.append(placement)
        drawn = _draw_overlay(image, placements, found, overlay) if overlay is not None else None
        results.append({"width": width, "height": height, "instances": found, "overlay_png": drawn})
    return results
