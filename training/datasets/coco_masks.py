"""COCO instance masks: the "instance-masks" target of the COCO-json reader (`coco`).

Each object's mask comes from its `segmentation` (polygons, or RLE, compressed or not: decoded by
pycocotools), resized with the image (nearest), its box the tight box of that mask
(`instance_masks.instance_target`). Every segmentation is checked before pycocotools sees it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as coco_mask

from easerve.training.datasets.canonical import DetectionTarget, image_tensor
from easerve.training.datasets.coco import CocoDetectionDataset, CocoImage, CocoSource
from easerve.training.datasets.errors import DatasetError
from easerve.training.datasets.image_io import read_rgb, resize_rgb
from easerve.training.datasets.instance_masks import instance_target

# Polygon coordinates further than this many image sizes from the image are refused (pycocotools
# crashes on huge or non-finite ones).
POLYGON_BOUND = 10


class CocoInstanceDataset(CocoDetectionDataset):
    """`CocoDetectionDataset` whose targets carry each object's mask (see the module docstring)."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, DetectionTarget]:
        record = self.images[index]
        image = read_rgb(record.path)
        masks = np.zeros((len(record.labels), self.size, self.size), np.uint8)
        for slot, segmentation in enumerate(record.segmentations):
            mask = decode_segmentation(record.path, segmentation, record.height, record.width)
            masks[slot] = np.asarray(Image.fromarray(mask).resize((self.size, self.size), Image.Resampling.NEAREST))
        return image_tensor(resize_rgb(image, self.size)), instance_target(masks, record.labels)

    @classmethod
    def check_annotations(cls, source: CocoSource, images: list[CocoImage]) -> None:
        """Raises DatasetError for an object without a readable `segmentation` or an image without
        the height and width its masks need, before pycocotools reads any of them."""
        for image in images:
            if image.segmentations and (image.height <= 0 or image.width <= 0):
                raise DatasetError(source.annotations, f"image {image.path.name} has no height and width for its masks")
            if any(not segmentation for segmentation in image.segmentations):
                raise DatasetError(source.annotations, f"an object of image {image.path.name} has no segmentation")
            for segmentation in image.segmentations:
                problem = segmentation_problem(segmentation, image.height, image.width)
                if problem is not None:
                    raise DatasetError(image.path, f"an object's segmentation is {problem}")


def _polygons_problem(polygons: list, height: int, width: int) -> str | None:
    limit = POLYGON_BOUND * max(height, width)
    if not polygons:
        return "an empty polygon list"
    for polygon in polygons:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            return "a polygon that is not a list of at least three x, y pairs"
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in polygon):
            return "a polygon coordinate that is not a number"
        if not all(math.isfinite(v) and abs(v) <= limit for v in polygon):
            return f"a polygon coordinate that is not finite or beyond {POLYGON_BOUND}x the image"
    return None


def _rle_problem(rle: dict, height: int, width: int) -> str | None:
    if rle.get("size") != [height, width]:
        return f"an RLE of size {rle.get('size')}, not the image's [{height}, {width}]"
    counts = rle.get("counts")
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            return "RLE counts that are not non-negative integers"
        if sum(counts) != height * width:
            return f"RLE counts that cover {sum(counts)} pixels, not the image's {height * width}"
        return None
    if not isinstance(counts, str) or not counts:
        return "RLE counts that are neither a list nor a string"
    try:
        decoded = compressed_counts(counts)
    except ValueError as error:
        return f"a compressed RLE that cannot be read ({error})"
    if min(decoded) < 0 or sum(decoded) != height * width:
        return f"a compressed RLE that covers {sum(decoded)} pixels, not the image's {height * width}"
    return None


def segmentation_problem(segmentation: object, height: int, width: int) -> str | None:
    """What is wrong with a COCO `segmentation` of a height x width image (polygons, or RLE
    compressed or not), None when pycocotools may read it: it crashes or reads memory it does not
    own on some malformed input, so everything is checked first."""
    if isinstance(segmentation, list):
        return _polygons_problem(segmentation, height, width)
    if isinstance(segmentation, dict):
        return _rle_problem(segmentation, height, width)
    return f"a {type(segmentation).__name__}, neither polygons nor RLE"


def decode_segmentation(path: Path, segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """The (height, width) uint8 mask of a checked COCO `segmentation` (`segmentation_problem`);
    DatasetError naming the image `path` if pycocotools still refuses it."""
    try:
        if isinstance(segmentation, list):
            rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation["counts"], list):
            rle = coco_mask.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        return coco_mask.decode(rle)
    except Exception as error:  # pycocotools raises bare Exception for input it cannot read
        raise DatasetError(path, f"an object's segmentation cannot be decoded ({error})") from error


def compressed_counts(text: str) -> list[int]:
    """The run lengths of a COCO compressed RLE string (pycocotools' `rleFrString`, in Python, so
    that a malformed string is refused instead of decoded from memory it does not own)."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise ValueError("the string ends inside a count")
            chunk = ord(text[position]) - 48
            if not 0 <= chunk < 64:
                raise ValueError(f"character {text[position]!r} is not in the encoding")
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position += 1
            shift += 5
            if not more and chunk & 0x10:
                value -= 1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts
