"""Instance segmentation: per object its class, score, box and mask in the original image's
pixels, and optionally a colour overlay.

The model's outputs are the detector's `boxes`, `scores` and `labels` (see `detection`) and
`masks` (n, K, h, w), each object's probability map in the pixels of the model's input. A mask
is that map resized to the original image with Pillow's bilinear filter (half-pixel centres; a
reduction averages the cells under the filter) and cut at 0.5; only the region around the map's
cells at or above 0.5 is resized (no pixel outside it can reach 0.5), and the run-length encoding
is made from that region, so an object costs its own extent, not the image's. Masks are COCO
run-length encodings by default (`{"size": [height, width], "counts": ...}`, decoded by
pycocotools' `mask.decode` and every COCO tool) or, on request, a 1-bit PNG each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask
from pydantic import BaseModel, Field

from easerve.artifacts.manifest import Manifest
from easerve.service.codecs.images import DecodedImage, OpenedImage, encode_png_base64
from easerve.service.deadline import Deadline
from easerve.service.schemas import InferenceResponse
from easerve.service.tasks.detection import Detection, ImageScale, detection_at, kept_slots
from easerve.service.tasks.segmentation import (
    NO_OVERLAY,
    OVERLAY_BYTES_PER_PIXEL,
    Overlay,
    class_colours,
    drawn_overlay,
)

MaskFormat = Literal["rle", "png"]
MASK_THRESHOLD = 0.5
# Bytes per original pixel while one mask is made (the region is at most the image): the region
# resized as float32 (Pillow's image and numpy's copy), cut (bool), kept (uint8), its column edges
# for the run lengths (int8, twice), and for a PNG the whole mask and its encoding.
_MASK_BYTES_PER_PIXEL = 14


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
        default=None, description="base64 RGB PNG: the image with each instance's mask and box in its own colour"
    )
    overlay_jpeg: str | None = Field(default=None, description="the overlay as a base64 JPEG (`overlay_format=jpeg`)")


class InstancesResponse(InferenceResponse):
    results: list[ImageInstances]


def instance_bytes(width: int, height: int, overlay_pixels: int) -> int:
    """Estimated peak working memory of `segment_instances` for one image."""
    return _MASK_BYTES_PER_PIXEL * width * height + OVERLAY_BYTES_PER_PIXEL * overlay_pixels


@dataclass(frozen=True)
class MaskPlacement:
    """Where a mask lies in an image: the top-left corner of its region and the region's pixels
    (uint8, 1 = in the mask)."""

    top: int
    left: int
    pixels: np.ndarray

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.pixels))

    def full(self, height: int, width: int) -> np.ndarray:
        """The whole (height, width) mask, bool."""
        mask = np.zeros((height, width), bool)
        rows, columns = self.pixels.shape
        mask[self.top : self.top + rows, self.left : self.left + columns] = self.pixels
        return mask

    def run_lengths(self, height: int, width: int) -> list[int]:
        """COCO's uncompressed counts of the whole mask (column-major runs, zeros first), from the
        region alone."""
        # Per region column, where its runs of ones start and end (row offsets into the column).
        rows, columns = self.pixels.shape
        padded = np.zeros((columns, rows + 2), np.int8)
        padded[:, 1:-1] = self.pixels.T
        edges = np.diff(padded, axis=1)
        start_column, start_row = np.nonzero(edges == 1)
        end_column, end_row = np.nonzero(edges == -1)
        starts = (self.left + start_column) * height + self.top + start_row
        ends = (self.left + end_column) * height + self.top + end_row
        # A run that ends at the foot of a column and one that starts at the head of the next
        # are one run in column-major order.
        joined = np.zeros(len(starts), bool)
        joined[1:] = starts[1:] == ends[:-1]
        boundaries = np.empty(2 * len(starts), np.int64)
        boundaries[0::2], boundaries[1::2] = starts, ends
        keep = np.ones(len(boundaries), bool)
        keep[1:-1:2] = ~joined[1:]
        keep[2::2] = ~joined[1:]
        counts = np.diff(np.concatenate(([0], boundaries[keep], [height * width])))
        return counts.tolist()

    def rle(self, height: int, width: int) -> dict[str, object]:
        """The whole mask as COCO compressed RLE."""
        encoded = coco_mask.frPyObjects(
            {"size": [height, width], "counts": self.run_lengths(height, width)}, height, width
        )
        return {"size": [height, width], "counts": encoded["counts"].decode("ascii")}


def place_mask(probabilities: np.ndarray, width: int, height: int) -> MaskPlacement:
    """The (h, w) probability map resized (Pillow's bilinear filter) to width x height and cut at
    0.5, computed only over the region its cells at or above 0.5 can reach."""
    in_height, in_width = probabilities.shape
    rows, columns = np.nonzero(probabilities >= MASK_THRESHOLD)
    if rows.size == 0:
        return MaskPlacement(0, 0, np.zeros((0, 0), np.uint8))
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
    return MaskPlacement(y0, x0, (np.asarray(resized) >= MASK_THRESHOLD).astype(np.uint8))


class OverlayCanvas:
    """An image's overlay: each instance's mask painted, at the overlay's size, as its index (1 +
    the order it came in) into one map; coloured and boxed at the end (labels are the answer's:
    text in a picture is unreadable at most sizes it is shown at)."""

    def __init__(self, image: DecodedImage | OpenedImage, overlay: Overlay) -> None:
        assert isinstance(image, DecodedImage), "an overlay is drawn on a decoded image"
        self.image = image
        self.overlay = overlay
        width, height = image.original_size
        self.size = overlay.size(width, height)
        self.scale = (self.size[0] / width, self.size[1] / height)
        self.indices = np.zeros((self.size[1], self.size[0]), np.uint8)
        self.boxes: list[list[float]] = []

    def paint(self, placement: MaskPlacement, box: list[float]) -> None:
        """Paint the next instance: its mask, and its box (x1, y1, x2, y2 in the image's pixels)."""
        self.boxes.append(box)
        rows, columns = placement.pixels.shape
        if rows == 0 or len(self.boxes) > np.iinfo(self.indices.dtype).max:
            return
        scale_x, scale_y = self.scale
        x0, y0 = int(placement.left * scale_x), int(placement.top * scale_y)
        x1 = max(x0 + 1, min(self.size[0], math.ceil((placement.left + columns) * scale_x)))
        y1 = max(y0 + 1, min(self.size[1], math.ceil((placement.top + rows) * scale_y)))
        drawn = Image.fromarray(placement.pixels * 255).resize((x1 - x0, y1 - y0), Image.Resampling.NEAREST)
        self.indices[y0:y1, x0:x1][np.asarray(drawn) > 0] = len(self.boxes)

    def fields(self) -> dict[str, str | None]:
        """The overlay, encoded as asked: masks coloured, boxes outlined, in each instance's colour."""
        # Instance i (from 1) in the class palette's colour i, as the console draws it.
        colours = class_colours(len(self.boxes) + 1)
        outlines = self._outlines(colours)
        return self.overlay.fields(drawn_overlay(self.image.image, self.indices, colours, self.overlay.alpha, outlines))

    def _outlines(self, colours: np.ndarray) -> Callable[[Image.Image, int], None]:
        """What draws the boxes' outlines on a band of the overlay that starts at row `top`.
        Corners are whole pixels of the overlay (Pillow truncates them so), those far beyond it
        moved to two pixels outside (a box of no height also paints the row below it): each
        band draws its rows of the outlines drawn on the whole."""
        width, height = self.size
        scale_x, scale_y = self.scale
        corners = []
        for box, colour in zip(self.boxes, colours[1:], strict=True):
            box = np.asarray(box, np.float64) * (scale_x, scale_y, scale_x, scale_y)
            if not np.isfinite(box).all():
                continue
            x0, x1 = (min(max(int(x), -2), width) for x in sorted(box[0::2]))
            y0, y1 = (min(max(int(y), -2), height) for y in sorted(box[1::2]))
            corners.append(((x0, y0, x1, y1), tuple(int(c) for c in colour)))

        def outline(band: Image.Image, top: int) -> None:
            pen = ImageDraw.Draw(band)
            for (x0, y0, x1, y1), colour in corners:
                if max(y1, y0 + 1) >= top and y0 < top + band.height:
                    pen.rectangle((x0, y0 - top, x1, y1 - top), outline=colour)

        return outline


def _encoded_mask(placement: MaskPlacement, width: int, height: int, mask_format: MaskFormat) -> dict[str, object]:
    if mask_format == "rle":
        return {"mask": placement.rle(height, width)}
    return {"mask_png": encode_png_base64(placement.full(height, width))}


def segment_instances(
    outputs: dict[str, np.ndarray],
    manifest: Manifest,
    images: Sequence[DecodedImage | OpenedImage],
    score_threshold: float,
    k: int,
    mask_format: MaskFormat,
    overlay: Overlay | None,
    deadline: Deadline,
) -> list[dict[str, object]]:
    """One result per image (`ImageInstances`): the detections scoring at least
    `score_threshold`, best first, at most `k`, each with its mask at the image's original size,
    and with an `overlay` the image (then decoded) drawn with them. Checks the deadline before
    each mask."""
    results = []
    for boxes, scores, labels, masks, image in zip(
        outputs["boxes"], outputs["scores"], outputs["labels"], outputs["masks"], images, strict=True
    ):
        width, height = image.original_size
        scale = ImageScale.of(manifest, width, height)
        canvas = OverlayCanvas(image, overlay) if overlay is not None else None
        found = []
        for slot in kept_slots(scores, labels, len(manifest.labels), score_threshold, k):
            deadline.check("drawing instance masks")
            placement = place_mask(masks[slot], width, height)
            instance = detection_at(slot, boxes, scores, labels, manifest, scale) | {"area": placement.area}
            found.append(instance | _encoded_mask(placement, width, height, mask_format))
            if canvas is not None:
                canvas.paint(placement, instance["box"])
        if canvas is not None:
            deadline.check("drawing the instances' overlay")
        drawn = canvas.fields() if canvas is not None else NO_OVERLAY
        results.append({"width": width, "height": height, "instances": found, **drawn})
    return results
