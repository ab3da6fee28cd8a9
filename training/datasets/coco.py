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
are left out; images without boxes are kept as negatives. Each object's `segmentation` is kept
for the targets that read it (the masks of "instance-masks": `coco_masks`).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from easerve.training.datasets.canonical import DatasetRequest, DetectionTarget, Split, detection_target, image_tensor
from easerve.training.datasets.errors import DatasetError
from easerve.training.datasets.image_io import read_rgb, resize_rgb
from easerve.training.datasets.splits import holdout_split, limit_items

POOLED_ANNOTATIONS = "annotations.json"
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

    @classmethod
    def check_annotations(cls, source: CocoSource, images: list[CocoImage]) -> None:
        """Raises DatasetError for an annotation this data set cannot read; boxes are checked as
        they are loaded, so nothing is left to check here."""


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


def open_coco(root: Path, request: DatasetRequest, dataset: type[CocoDetectionDataset]) -> CocoDetectionDataset:
    """The requested split of the COCO-json data set at `root` as a `dataset`: `CocoDetectionDataset`
    (boxes) or a subclass that reads more of each object's annotation (`coco_masks`)."""
    source = find_coco_source(root, request.split)
    images, class_names = load_coco_images(source)
    dataset.check_annotations(source, images)
    indices = holdout_split(len(images), request.split) if source.pooled else np.arange(len(images))
    indices = indices[limit_items(len(indices), request.num_samples, request.seed)]
    return dataset([images[i] for i in indices], class_names, request.size)
