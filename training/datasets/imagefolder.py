"""ImageFolder classification data: one sub-folder of images per class.

Layouts (class names are the sorted class folder names of the train split):
- `root/train/<class>/*.png|jpg|...` and `root/test/<class>/...` (or `root/val/...`);
- `root/<class>/*` alone: a fixed 10 % of the images is the test split (`splits.holdout_split`).
Files without an image suffix are not samples and are not read; an image file that does not
decode raises `DatasetError` when its sample is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from easerve.training.datasets.canonical import DatasetRequest, Split, image_tensor
from easerve.training.datasets.errors import DatasetError
from easerve.training.datasets.image_io import is_image_file, read_rgb, resize_rgb
from easerve.training.datasets.splits import holdout_split, limit_items

TEST_FOLDER_NAMES = ("test", "val")


class ImageFileDataset(Dataset):
    """Images read from disk on access, resized to `size` x `size`, each with a class label."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int], class_names: Sequence[str], size: int) -> None:
        self.files = list(files)
        self.labels = list(labels)
        self.class_names = list(class_names)
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = resize_rgb(read_rgb(self.files[index]), self.size)
        return image_tensor(image), torch.tensor(self.labels[index], dtype=torch.int64)


def class_folders(root: Path) -> list[Path]:
    """The class sub-folders of `root`, sorted by name; DatasetError if there are none."""
    if not root.is_dir():
        raise DatasetError(root, "no such directory")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(root, "no class folders (expected root/<class>/<image files>)")
    return folders


def _labelled_images(root: Path, class_names: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for folder in class_folders(root):
        if folder.name not in class_names:
            raise DatasetError(folder, f"class {folder.name!r} is not one of the train classes {class_names}")
        images = sorted(p for p in folder.iterdir() if is_image_file(p))
        if not images:
            raise DatasetError(folder, "class folder holds no image files")
        files += images
        labels += [class_names.index(folder.name)] * len(images)
    return files, labels


def _split_root(root: Path, split: Split) -> Path | None:
    """The folder holding `split` when the data set ships with split folders, else None."""
    if not (root / "train").is_dir():
        return None
    if split == "train":
        return root / "train"
    for name in TEST_FOLDER_NAMES:
        if (root / name).is_dir():
            return root / name
    looked_for = ", ".join(TEST_FOLDER_NAMES)
    raise DatasetError(root, f"has a train folder but no test folder (looked for {looked_for})")


def open_image_folder(root: Path, request: DatasetRequest) -> ImageFileDataset:
    """The requested split of the ImageFolder data set at `root`."""
    split_root = _split_root(root, request.split)
    class_root = root / "train" if split_root is not None else root
    class_names = [folder.name for folder in class_folders(class_root)]
    files, labels = _labelled_images(split_root or root, class_names)
    indices = holdout_split(len(files), request.split) if split_root is None else np.arange(len(files))
    indices = indices[limit_items(len(indices), request.num_samples, request.seed)]
    chosen_labels = [labels[i] for i in indices]
    return ImageFileDataset([files[i] for i in indices], chosen_labels, class_names, request.size)
