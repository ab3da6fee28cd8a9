"""COCO-json detection and instance data: boxes (and masks) of each image from an instances
annotation file.

Layouts:
- official: `root/annotations/instances_<split>*.json` with the images in the folder named like
  the file without `instances_` (`instances_train2017.json` -> `root/train2017/`); the test
  split reads `instances_val*` (COCO's test annotations are not public), else `instances_test*`;
- one pool: `root/annotations.json` with the images in `root/images/` (or in `root/` itself);
  a fixed 10 % of the images is the test split (`splits.holdout_split`).

Boxes go from COCO's xywh to xyxy pixels of the resized image. Category ids, in increasing
order, map to contiguous indices and `class_names` are their names, so both split files must list
the same categories. Crowd annotations (`iscrowd` = 1) mark regions, not objects to detect, and
are left out; images without boxes are kept as negatives. For instance segmentation each
object's mask comes from its `segmentation` (polygons, or RLE, compressed or not: decoded by
pycocotools), resized with the image (nearest), its box the tight box of that mask.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from easerve.training.datasets.canonical import (
    DatasetRequest,
    DetectionTarget,
    Split,
    detection_target,
    image_tensor,
    instance_target,
)
from easerve.training.datasets.errors import DatasetError
from easerve.training.datasets.image_io import read_rgb, resize_rgb
from easerve.training.datasets.splits import holdout_split, limit_items

POOLED_ANNOTATIONS = "annotations.json"
# Polygon coordinates further than this many image sizes from the image are refused (pycocotools
# crashes on huge or non-finite ones).
POLYGON_BOUND = 10
SPLIT_FILE_PREFIXES: dict[Split, tuple[str, ...]] = {"train": ("train",), "test": ("val", "test")}


@dataclass(frozen=True)
class CocoImage:
    """One annotated image: its file, xyxy boxes (k, 4) in its own pixels, class indices (k,),
    the objects' `segmentation` fields as annotated, and its size in the annotations."""

    path: Path
    boxes: np.ndarray
    labels: np.ndarray
    segmentations: list
    height: int
    width: int


@dataclass(frozen=True)
class CocoSource:
    """Where a split's annotations and images are, and whether the file pools both splits."""

    annotations: Path
    images: Path
    pooled: bool


class CocoDetectionDataset(Dataset):
    """Images read from disk on access, resized to `size` x `size`, boxes scaled with them."""

    def __init__(self, images: Sequence[CocoImage], class_names: Sequence[str], size: int) -> None:
        self.images = list(images)
        self.class_names = list(class_names)
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, DetectionTarget]:
        record = self.images[index]
        image = read_rgb(record.path)
        width, height = image.size
        scale = np.array([self.size / width, self.size / height] * 2, np.float32)
        target = detection_target(record.boxes * scale, record.labels)
        return image_tensor(resize_rgb(image, self.size)), target


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


def find_coco_source(root: Path, split: Split) -> CocoSource:
    """The annotation file and image folder of `split` under `root` (see the module docstring)."""
    if not root.is_dir():
        raise DatasetError(root, "no such directory")
    if (root / POOLED_ANNOTATIONS).is_file():
        images = root / "images" if (root / "images").is_dir() else root
        return CocoSource(root / POOLED_ANNOTATIONS, images, pooled=True)
    for prefix in SPLIT_FILE_PREFIXES[split]:
        candidates = sorted((root / "annotations").glob(f"instances_{prefix}*.json"))
        if len(candidates) > 1:
            names = [c.name for c in candidates]
            raise DatasetError(root / "annotations", f"several {split} annotation files: {names}")
        if candidates:
            images = root / candidates[0].stem.removeprefix("instances_")
            if not images.is_dir():
                raise DatasetError(images, f"image folder of {candidates[0].name} not found")
            return CocoSource(candidates[0], images, pooled=False)
    wanted = " or ".join(f"annotations/instances_{p}*.json" for p in SPLIT_FILE_PREFIXES[split])
    raise DatasetError(root, f"no COCO annotations: expected {POOLED_ANNOTATIONS} or {wanted}")


def _read_coco(path: Path) -> COCO:
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            return COCO(str(path))
    except FileNotFoundError:
        raise DatasetError(path, "annotation file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(path, f"not valid JSON ({error})") from error
    except (KeyError, TypeError, AssertionError) as error:
        raise DatasetError(path, f"not a COCO instances file ({type(error).__name__}: {error})") from error


def _xyxy_boxes(path: Path, annotations: list[dict]) -> np.ndarray:
    for annotation in annotations:
        bbox = annotation["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and np.isfinite(bbox).all() and min(bbox[2:]) >= 0):
            raise DatasetError(path, f"annotation {annotation.get('id')} has an invalid bbox {bbox}")
    xywh = np.array([a["bbox"] for a in annotations], np.float32).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def _image_side(path: Path, info: dict, side: str) -> int:
    """An image's `side` ("height" or "width") as annotated, 0 when absent."""
    value = info.get(side, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DatasetError(path, f"image {info.get('id')} has an invalid {side} {value!r}")
    return value


def _annotated_images(coco: COCO, source: CocoSource, index_of: dict[int, int]) -> list[CocoImage]:
    images = []
    for image_id in sorted(coco.imgs):
        path = source.images / coco.imgs[image_id]["file_name"]
        if not path.is_file():
            raise DatasetError(path, f"image {image_id} of {source.annotations.name} not found")
        annotations = [a for a in coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        unknown = {a["category_id"] for a in annotations} - set(index_of)
        if unknown:
            raise DatasetError(
                source.annotations, f"image {image_id} has boxes of unknown category ids {sorted(unknown)}"
            )
        labels = np.array([index_of[a["category_id"]] for a in annotations], np.int64)
        info = coco.imgs[image_id]
        images.append(
            CocoImage(
                path,
                _xyxy_boxes(source.annotations, annotations),
                labels,
                [a.get("segmentation") for a in annotations],
                _image_side(source.annotations, info, "height"),
                _image_side(source.annotations, info, "width"),
            )
        )
    return images


def load_coco_images(source: CocoSource) -> tuple[list[CocoImage], list[str]]:
    """Every image of the annotation file with its non-crowd boxes, and the class names."""
    coco = _read_coco(source.annotations)
    category_ids = sorted(coco.getCatIds())
    if not category_ids:
        raise DatasetError(source.annotations, "no categories")
    orphans = {a["image_id"] for a in coco.anns.values()} - set(coco.imgs)
    if orphans:
        raise DatasetError(source.annotations, f"annotations refer to unknown image ids {sorted(orphans)[:5]}")
    try:
        images = _annotated_images(coco, source, {c: i for i, c in enumerate(category_ids)})
        names = [coco.cats[category]["name"] for category in category_ids]
    except (KeyError, TypeError) as error:
        reason = f"an image, annotation or category lacks a field ({error})"
        raise DatasetError(source.annotations, reason) from error
    return images, names


def _check_masks(source: CocoSource, images: list[CocoImage]) -> None:
    for image in images:
        if image.segmentations and (image.height <= 0 or image.width <= 0):
            raise DatasetError(source.annotations, f"image {image.path.name} has no height and width for its masks")
        if any(not segmentation for segmentation in image.segmentations):
            raise DatasetError(source.annotations, f"an object of image {image.path.name} has no segmentation")
        for segmentation in image.segmentations:
            problem = segmentation_problem(segmentation, image.height, image.width)
            if problem is not None:
                raise DatasetError(image.path, f"an object's segmentation is {problem}")


def open_coco(root: Path, request: DatasetRequest) -> CocoDetectionDataset:
    """The requested split of the COCO-json data set at `root`: boxes, and with the
    "instance-masks" target, masks."""
    source = find_coco_source(root, request.split)
    images, class_names = load_coco_images(source)
    with_masks = request.target == "instance-masks"
    if with_masks:
        _check_masks(source, images)
    indices = holdout_split(len(images), request.split) if source.pooled else np.arange(len(images))
    indices = indices[limit_items(len(indices), request.num_samples, request.seed)]
    dataset = CocoInstanceDataset if with_masks else CocoDetectionDataset
    return dataset([images[i] for i in indices], class_names, request.size)
