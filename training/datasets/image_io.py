"""Reading users' image and label-mask files, resized to the model's input size.

Every failure becomes a `DatasetError` naming the file and the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from easerve.training.datasets.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def is_image_file(path: Path) -> bool:
    """Whether `path` is a file with an image suffix (case-insensitive)."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def read_rgb(path: Path) -> Image.Image:
    """The image at `path`, fully decoded, as RGB (greyscale, palette and alpha images converted)."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(path, "image file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DatasetError(path, f"cannot decode image ({error})") from error


def read_label_mask(path: Path, num_classes: int, ignore_index: int) -> np.ndarray:
    """uint8 (H, W) class indices from a palette or greyscale PNG; every value must be a class
    index below `num_classes` or `ignore_index`."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                reason = f"expected a palette or greyscale PNG of class indices, got mode {image.mode}"
                raise DatasetError(path, reason)
            mask = np.array(image)
    except FileNotFoundError:
        raise DatasetError(path, "mask file not found") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DatasetError(path, f"cannot decode mask ({error})") from error
    bad = np.setdiff1d(np.unique(mask), [*range(num_classes), ignore_index])
    if bad.size:
        reason = f"mask values {bad.tolist()} are neither class indices (< {num_classes}) nor {ignore_index}"
        raise DatasetError(path, reason)
    return mask


def resize_rgb(image: Image.Image, size: int) -> np.ndarray:
    """uint8 (size, size, 3): `image` resized (bilinear, aspect ratio not kept)."""
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))


def resize_labels(mask: np.ndarray, size: int) -> np.ndarray:
    """(size, size) `mask` resized with nearest neighbour, so no new values appear."""
    return np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST))
