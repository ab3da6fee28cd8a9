"""The sample inputs the load test sends and the endpoint check verifies, with their answers.

`loadtest/samples/` holds real inputs from the generated data sets (written once by
`loadtest.make_samples`): one 64x64 single-shape image per shape class, 128x128 multi-shape
scenes with their boxes and per-pixel truths, one 1024-point cloud per primitive with its part labels.
Reading them needs numpy and Pillow only, never torch.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from easerve.artifacts.tasks import SampleSet as SampleSetName

SAMPLES_DIR = Path(__file__).with_name("samples")
INDEX_FILE = "index.json"


@dataclass(frozen=True)
class ImageSample:
    """A single-shape image (PNG bytes) and its shape class."""

    name: str
    png: bytes
    label: str


@dataclass(frozen=True)
class SceneSample:
    """A multi-shape scene (PNG bytes), its boxes (k, 4) xyxy pixels with their shape classes,
    and its per-pixel truths (H, W) uint8 by name (`make_samples.SCENE_MAPS` says what each
    holds; e.g. "mask": 0 background, 1 + shape class index)."""

    name: str
    png: bytes
    boxes: np.ndarray
    labels: tuple[str, ...]
    maps: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class CloudSample:
    """A point cloud (P, 3) float32, its `.npy` bytes, its primitive class and its part names."""

    name: str
    points: np.ndarray
    npy: bytes
    label: str
    parts: tuple[str, ...]


@dataclass(frozen=True)
class SampleSet:
    images: tuple[ImageSample, ...]
    scenes: tuple[SceneSample, ...]
    clouds: tuple[CloudSample, ...]

    def pngs(self, name: SampleSetName) -> list[bytes]:
        """The PNG of every sample of the image set `name` (a task spec's `samples`), in order."""
        image_sets: dict[str, tuple[ImageSample, ...] | tuple[SceneSample, ...]] = {
            "images": self.images,
            "scenes": self.scenes,
        }
        return [sample.png for sample in image_sets[name]]


def resized_png(png: bytes, size: int) -> bytes:
    """The image stretched to `size` x `size` (bilinear), as PNG bytes."""
    image = Image.open(io.BytesIO(png)).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _cloud(directory: Path, entry: dict, part_names: list[str]) -> CloudSample:
    npy = (directory / entry["file"]).read_bytes()
    parts = np.load(directory / entry["parts"])
    return CloudSample(
        name=entry["file"],
        points=np.load(io.BytesIO(npy)),
        npy=npy,
        label=entry["label"],
        parts=tuple(part_names[index] for index in parts),
    )


@cache
def load_samples(directory: Path = SAMPLES_DIR) -> SampleSet:
    """Every sample of `directory`, as listed by its index.json (read once per process)."""
    index = json.loads((directory / INDEX_FILE).read_text())
    images = tuple(
        ImageSample(entry["file"], (directory / entry["file"]).read_bytes(), entry["label"])
        for entry in index["images"]
    )
    scenes = tuple(
        SceneSample(
            name=entry["file"],
            png=(directory / entry["file"]).read_bytes(),
            boxes=np.asarray(entry["boxes"], np.float32).reshape(-1, 4),
            labels=tuple(entry["labels"]),
            maps={name: np.asarray(Image.open(directory / file)) for name, file in entry["maps"].items()},
        )
        for entry in index["scenes"]
    )
    clouds = tuple(_cloud(directory, entry, index["part_names"]) for entry in index["clouds"])
    return SampleSet(images, scenes, clouds)
