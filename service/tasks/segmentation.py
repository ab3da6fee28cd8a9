"""Semantic segmentation: a class mask at the original resolution, class pixel fractions, and
optionally a colour overlay.

The logits (n, C, h, w) are resized bilinearly to the original image size before the argmax,
so edges follow the logits rather than blocky upsampled labels. The mask PNG's pixel values
are class indices (0 = first label, usually background). An overlay of an image larger than
`max_overlay_pixels` is drawn at a scaled-down size (aspect ratio kept): the decoder then never
has to keep a huge image for a picture nobody reads at full size.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from easerve.artifacts.manifest import Manifest
from easerve.service.codecs.bands import band_count, in_bands
from easerve.service.codecs.images import (
    PILLOW_RGB_BYTES,
    DecodedImage,
    OpenedImage,
    encode_jpeg_base64,
    encode_png_base64,
)
from easerve.service.deadline import Deadline
from easerve.service.schemas import InferenceResponse

# Values of the resized logits held at once (a band of rows x classes x width).
_BAND_VALUES = 8_000_000
# The least mask pixels a core of their own is worth.
_LEAST_MASK_BAND_PIXELS = 1 << 20
# A band with more than 1/this of its pixels between rows of different classes is blended whole.
_MOSTLY_BOUNDARIES = 8
# Bytes per overlay pixel while one is drawn: its labels and pixels; of each band being drawn its
# picture and colours (Pillow holds RGB in 4 bytes), their opacity and its pixels; then the
# pixels' filtered rows and the PNG.
OVERLAY_BYTES_PER_PIXEL = 16
# The least bytes of Pillow's picture a band of an overlay is worth.
_OVERLAY_BAND_BYTES = 4 << 20
# An overlay is a picture to look at: as JPEG (when asked for) at this quality.
OVERLAY_JPEG_QUALITY = 90

OverlayFormat = Literal["png", "jpeg"]
# An answer's overlay fields when none was asked for.
NO_OVERLAY: dict[str, str | None] = {"overlay_png": None, "overlay_jpeg": None}


class ImageSegmentation(BaseModel):
    width: int
    height: int
    mask_png: str = Field(description="base64 greyscale PNG; pixel value = class index")
    class_fractions: dict[str, float] = Field(description="fraction of the image's pixels per class")
    overlay_png: str | None = Field(
        default=None, description="base64 RGB PNG: the image with classes coloured (scaled down if very large)"
    )
    overlay_jpeg: str | None = Field(default=None, description="the overlay as a base64 JPEG (`overlay_format=jpeg`)")


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
    bounded whatever the image size and class count.

    Each output row blends two rows of the logits resized along x. Where both rows' argmax is
    the same class, every blend of them has that argmax too (that class is at least every other
    in both), so only the pixels between rows that disagree (the class boundaries) are blended
    and compared: the answer is exact, at a fraction of the work on large images."""
    classes, in_height, in_width = logits.shape
    dtype = np.uint8 if classes <= 256 else np.uint16
    if (in_height, in_width) == (height, width):
        return logits.argmax(axis=0).astype(dtype)
    x_low, x_high, x_weight = _linear_taps(width, in_width)
    y_low, y_high, y_weight = _linear_taps(height, in_height)
    logits = logits.astype(np.float32)
    columns = logits[:, :, x_low] * (1 - x_weight) + logits[:, :, x_high] * x_weight  # (C, h, width)
    top = columns.argmax(axis=0).astype(dtype)  # (h, width)
    # Bands of rows filled on several cores at once, together holding at most _BAND_VALUES (as
    # many workers as bands of at least one row fit in it).
    workers = min(band_count(width * height, _LEAST_MASK_BAND_PIXELS), max(1, _BAND_VALUES // (classes * width)))
    band = max(1, _BAND_VALUES // (classes * width * workers))
    starts = range(0, height, band)
    mask = np.empty((height, width), dtype)

    def fill(start: int) -> None:
        rows = slice(start, start + band)
        low, high = top[y_low[rows]], top[y_high[rows]]
        row, column = np.nonzero(low != high)
        if row.size > low.size // _MOSTLY_BOUNDARIES:  # noise: blending the whole band is cheaper
            weight = y_weight[rows, None]
            resized = columns[:, y_low[rows]] * (1 - weight) + columns[:, y_high[rows]] * weight
            mask[rows] = resized.argmax(axis=0)
            return
        mask[rows] = low
        if row.size:
            weight = y_weight[rows][row]
            lows, highs = y_low[rows][row], y_high[rows][row]
            blended = columns[:, lows, column] * (1 - weight) + columns[:, highs, column] * weight
            mask[rows][row, column] = blended.argmax(axis=0)

    in_bands(lambda worker: [fill(start) for start in starts[worker::workers]], workers)
    return mask


def class_counts(mask: np.ndarray, classes: int) -> list[int]:
    """Pixels of each of `classes` classes in the class-index `mask`."""
    if mask.dtype == np.uint8:  # Pillow's histogram, in C: a fifth of numpy's bincount on large masks
        return Image.fromarray(mask).histogram()[:classes]
    return np.bincount(mask.ravel(), minlength=classes).tolist()


def overlay_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) of the overlay of a `width` x `height` image: its own size, or scaled
    down (aspect ratio kept) to at most `max_pixels`."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def segmentation_bytes(width: int, height: int, classes: int, logits_height: int, overlay_pixels: int) -> int:
    """Estimated peak working memory of `segment` for one image: the resized logits (in bands),
    the mask and its PNG, and the overlay's images."""
    resize = 4 * classes * logits_height * width + 8 * min(_BAND_VALUES, classes * width * height)
    # The mask, its filtered rows and the PNG (at most as large); over 256 classes the mask holds
    # 2 bytes a pixel and is copied big-endian first.
    mask_png = 3 * width * height if classes <= 256 else 8 * width * height
    return resize + mask_png + OVERLAY_BYTES_PER_PIXEL * overlay_pixels


@dataclass(frozen=True)
class Overlay:
    """How an overlay is drawn: its opacity, its size (`width` pixels wide when asked for, height
    in proportion, never wider than the image, at most `max_pixels`) and its encoding."""

    alpha: float
    max_pixels: int
    width: int | None = None
    encoding: OverlayFormat = "png"

    def size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the overlay of a `width` x `height` image."""
        if self.width is not None and self.width < width:
            width, height = self.width, max(1, round(height * self.width / width))
        return overlay_size(width, height, self.max_pixels)

    def fields(self, pixels: np.ndarray) -> dict[str, str | None]:
        """The answer's overlay fields for the drawn uint8 RGB `pixels`: `overlay_png` or
        `overlay_jpeg` (base64), the other None."""
        if self.encoding == "jpeg":
            return {**NO_OVERLAY, "overlay_jpeg": encode_jpeg_base64(pixels, OVERLAY_JPEG_QUALITY)}
        return {**NO_OVERLAY, "overlay_png": encode_png_base64(pixels)}


def _overlay(
    image: DecodedImage | OpenedImage, mask: np.ndarray, colours: np.ndarray, overlay: Overlay
) -> dict[str, str | None]:
    """The overlay's field, its labels from `mask` (the image's, at its original size): itself,
    or resized to the overlay by nearest neighbour (a picture to look at: the logits are not
    resized again)."""
    assert isinstance(image, DecodedImage), "an overlay is drawn on a decoded image"
    size = overlay.size(*image.original_size)
    labels = mask if size == image.original_size else _nearest(mask, size)
    return overlay.fields(drawn_overlay(image.image, labels, colours, overlay.alpha))


def drawn_overlay(
    picture: Image.Image,
    labels: np.ndarray,
    colours: np.ndarray,
    alpha: float,
    outline: Callable[[Image.Image, int], None] | None = None,
) -> np.ndarray:
    """uint8 (H, W, 3): the RGB `picture` at the size of `labels` (H, W), resized bilinearly
    where it is not, painted by `paint_overlay`, then drawn on by `outline` (given each band and
    the row it starts at); `picture` itself is left as it is. A large one is drawn in bands of
    rows on several cores; each band is resized from the rows its taps read (Pillow's box), so
    the bands joined are the one resize (to a rounding of the box's fractional edges)."""
    height, width = labels.shape
    pixels = np.empty((height, width, 3), np.uint8)
    bands = min(band_count(PILLOW_RGB_BYTES * width * height, _OVERLAY_BAND_BYTES), height)
    cuts = [round(height * band / bands) for band in range(bands + 1)]
    scale = picture.height / height
    picture.load()  # the bands only read its pixels

    def draw(band: int) -> None:
        top, bottom = cuts[band], cuts[band + 1]
        if picture.size == (width, height):
            part = picture.crop((0, top, width, bottom))
        else:
            box = (0, top * scale, picture.width, bottom * scale)
            part = picture.resize((width, bottom - top), Image.Resampling.BILINEAR, box=box)
        paint_overlay(part, labels[top:bottom], colours, alpha)
        if outline is not None:
            outline(part, top)
        pixels[top:bottom] = np.asarray(part)

    in_bands(draw, bands)
    return pixels


def _nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))


def paint_overlay(picture: Image.Image, labels: np.ndarray, colours: np.ndarray, alpha: float) -> None:
    """Paint, in place, every pixel of the RGB `picture` whose label (an index into `colours`,
    same size) is not 0: blended with its label's colour at opacity `alpha`."""
    if labels.dtype == np.uint8:  # Pillow's palette lookups, in C: a third of numpy's gather
        coloured = Image.fromarray(labels)
        coloured.putpalette(np.asarray(colours[:256], np.uint8).ravel().tolist())  # uint8 labels use 256 at most
        coloured = coloured.convert("RGB")
        opacity = Image.fromarray(labels).point([0] + [round(alpha * 255)] * 255)
    else:
        coloured = Image.fromarray(colours[labels])
        opacity = Image.fromarray(np.where(labels > 0, np.uint8(round(alpha * 255)), np.uint8(0)))
    picture.paste(coloured, mask=opacity)


def segment(
    outputs: dict[str, np.ndarray],
    manifest: Manifest,
    images: Sequence[DecodedImage | OpenedImage],
    overlay: Overlay | None,
    deadline: Deadline,
) -> list[dict[str, object]]:
    """One result per image (`ImageSegmentation`): the mask at the image's original size, and
    with an `overlay` the image (then decoded, at least at its overlay size) with classes
    coloured. Checks the deadline before each image."""
    logits = outputs[manifest.outputs[0].name]
    labels = manifest.labels
    colours = class_colours(len(labels))
    results = []
    for image_logits, image in zip(logits, images, strict=True):
        deadline.check("drawing segmentation masks")
        width, height = image.original_size
        mask = mask_at(image_logits, width, height)
        counts = class_counts(mask, len(labels))
        fractions = {label: float(counts[i]) / mask.size for i, label in enumerate(labels)}
        drawn = _overlay(image, mask, colours, overlay) if overlay is not None else NO_OVERLAY
        mask_png = encode_png_base64(mask)
        del mask
        results.append(
            {
                "width": width,
                "height": height,
                "mask_png": mask_png,
                "class_fractions": fractions,
                **drawn,
            }
        )
    return results
