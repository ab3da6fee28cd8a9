"""VOC-style segmentation data: JPEG images and palette PNG masks named by split lists.

Layout: `root/JPEGImages/<id>.jpg`, `root/SegmentationClass/<id>.png` (palette or greyscale PNG
whose pixel values are class indices, 255 = ignore), `root/ImageSets/Segmentation/train.txt`
and `val.txt` (one id per line); the test split reads `val.txt` (else `test.txt`). Class names
are the lines of `root/class_names.txt` when present, else the 21 Pascal VOC classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from easerve.training.datasets.canonical import DatasetRequest, Split, image_tensor
from easerve.training.datasets.errors import DatasetError
from easerve.training.datasets.image_io import read_label_mask, read_rgb, resize_labels, resize_rgb
from easerve.training.datasets.list_files import read_lines
from easerve.training.datasets.splits import limit_items

IGNORE_INDEX = 255
VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
SPLIT_LISTS: dict[Split, tuple[str, ...]] = {"train": ("train.txt",), "test": ("val.txt", "test.txt")}
CLASS_NAMES_FILE = "class_names.txt"


@dataclass(frozen=True)
class MaskedImage:
    """An image file and its mask file."""

    image: Path
    mask: Path


class VocSegmentationDataset(Dataset):
    """Images and masks read from disk on access, resized to `size` x `size` (masks nearest)."""

    def __init__(self, samples: Sequence[MaskedImage], class_names: Sequence[str], size: int) -> None:
        self.samples = list(samples)
        self.class_names = list(class_names)
        self.size = size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        image = read_rgb(sample.image)
        mask = read_label_mask(sample.mask, len(self.class_names), IGNORE_INDEX)
        if mask.shape != (image.height, image.width):
            reason = f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is {image.width}x{image.height}"
            raise DatasetError(sample.mask, reason)
        return (
            image_tensor(resize_rgb(image, self.size)),
            torch.from_numpy(resize_labels(mask, self.size).astype(np.int64)),
        )


def voc_class_names(root: Path) -> list[str]:
    """Names from `root/class_names.txt` (one per line, index order) or the Pascal VOC classes."""
    path = root / CLASS_NAMES_FILE
    return read_lines(path) if path.exists() else list(VOC_CLASSES)


def split_ids(root: Path, split: Split) -> list[str]:
    """The image ids listed for `split` under `root/ImageSets/Segmentation/`."""
    lists = root / "ImageSets" / "Segmentation"
    for name in SPLIT_LISTS[split]:
        if (lists / name).exists():
            return read_lines(lists / name)
    raise DatasetError(lists, f"no {split} list (looked for {', '.join(SPLIT_LISTS[split])})")


def _masked_image(root: Path, image_id: str) -> MaskedImage:
    sample = MaskedImage(
        image=root / "JPEGImages" / f"{image_id}.jpg", mask=root / "SegmentationClass" / f"{image_id}.png"
    )
    for path in (sample.image, sample.mask):
        if not path.is_file():
            raise DatasetError(path, f"listed image id {image_id!r} has no such file")
    return sample


def open_voc(root: Path, request: DatasetRequest) -> VocSegmentationDataset:
    """The requested split of the VOC-style data set at `root`."""
    if not root.is_dir():
        raise DatasetError(root, "no such directory")
    ids = split_ids(root, request.split)
    ids = [ids[i] for i in limit_items(len(ids), request.num_samples, request.seed)]
    return VocSegmentationDataset([_masked_image(root, i) for i in ids], voc_class_names(root), request.size)
