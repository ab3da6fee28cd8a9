"""Opening a data set by name or path: the generated sets and every supported user format.

`source` is a generated set (`shapes-2d`, `primitives-3d`), a path whose format is told from its
folder layout, or `<format>:<path>` to name the format (`imagefolder`, `coco`, `voc`,
`modelnet40`, `shapenet-part`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from easerve.artifacts.tasks import CLASSIFICATION, GENERATION, TASKS, Data, Target, task_spec
from easerve.model_defs.labels import PRIMITIVE_CLASSES, PRIMITIVE_PARTS, SEGMENTATION_CLASSES, SHAPE_CLASSES
from easerve.training.datasets.canonical import SPLITS, DatasetRequest, DetectionArrays, ImageArrays, PointArrays, Split
from easerve.training.datasets.coco import POOLED_ANNOTATIONS, CocoDetectionDataset, open_coco
from easerve.training.datasets.coco_masks import CocoInstanceDataset
from easerve.training.datasets.errors import DatasetError
from easerve.training.datasets.hdf5_arrays import has_dataset, split_files
from easerve.training.datasets.imagefolder import open_image_folder
from easerve.training.datasets.instance_masks import CROWDED_SHAPES, InstanceArrays
from easerve.training.datasets.modelnet40 import TEXT_NAMES_FILE, open_modelnet40
from easerve.training.datasets.primitives3d import generate_primitives
from easerve.training.datasets.shapenet_part import CATEGORY_FILE, open_shapenet_part
from easerve.training.datasets.shapes2d import MULTI_SHAPE, SINGLE_SHAPE, SceneLayout, Scenes, render_scenes
from easerve.training.datasets.voc import open_voc

DEFAULT_IMAGE_SIZE = 128
# Tasks whose bundled models take smaller images than the default.
SMALLER_IMAGES = {CLASSIFICATION.name: 64, GENERATION.name: 32}
DEFAULT_NUM_POINTS = 1024
DEFAULT_GENERATED_SAMPLES: dict[Split, int] = {"train": 4000, "test": 500}


# The scenes drawn for each target, and the data set of their labels.
SHAPES_2D: dict[Target, tuple[SceneLayout, Callable[[Scenes], Dataset]]] = {
    "label": (SINGLE_SHAPE, lambda s: ImageArrays(s.images, np.array([ls[0] for ls in s.labels]), SHAPE_CLASSES)),
    "pixel-labels": (MULTI_SHAPE, lambda s: ImageArrays(s.images, s.masks, SEGMENTATION_CLASSES)),
    "boxes": (MULTI_SHAPE, lambda s: DetectionArrays(s.images, s.boxes, s.labels, SHAPE_CLASSES)),
    "instance-masks": (CROWDED_SHAPES, lambda s: InstanceArrays(s.images, s.instances, s.labels, SHAPE_CLASSES)),
}


def _open_shapes_2d(request: DatasetRequest) -> Dataset:
    count = request.num_samples or DEFAULT_GENERATED_SAMPLES[request.split]
    layout, labelled = SHAPES_2D[request.target]
    return labelled(render_scenes(count, request.size, layout, request.seed, request.split))


def _open_primitives_3d(request: DatasetRequest) -> Dataset:
    count = request.num_samples or DEFAULT_GENERATED_SAMPLES[request.split]
    clouds = generate_primitives(count, request.num_points, request.seed, request.split)
    if request.target == "point-labels":
        return PointArrays(clouds.points, clouds.parts, PRIMITIVE_PARTS)
    return PointArrays(clouds.points, clouds.labels, PRIMITIVE_CLASSES)


# The COCO data set of each target its annotations hold.
COCO_DATASETS: dict[Target, type[CocoDetectionDataset]] = {
    "boxes": CocoDetectionDataset,
    "instance-masks": CocoInstanceDataset,
}


def _open_coco(root: Path, request: DatasetRequest) -> Dataset:
    return open_coco(root, request, COCO_DATASETS[request.target])


GENERATED: dict[str, Callable[[DatasetRequest], Dataset]] = {
    "shapes-2d": _open_shapes_2d,
    "primitives-3d": _open_primitives_3d,
}
FORMATS: dict[str, Callable[[Path, DatasetRequest], Dataset]] = {
    "imagefolder": open_image_folder,
    "coco": _open_coco,
    "voc": open_voc,
    "modelnet40": open_modelnet40,
    "shapenet-part": open_shapenet_part,
}
# What each source holds: its samples' data, and the targets they are labelled with.
TARGETS_OF_SOURCE: dict[str, tuple[Data, tuple[Target, ...]]] = {
    "shapes-2d": ("image", ("label", "boxes", "pixel-labels", "instance-masks")),
    "primitives-3d": ("pointcloud", ("label", "point-labels")),
    "imagefolder": ("image", ("label",)),
    "coco": ("image", ("boxes", "instance-masks")),
    "voc": ("image", ("pixel-labels",)),
    "modelnet40": ("pointcloud", ("label",)),
    "shapenet-part": ("pointcloud", ("point-labels", "label")),
}
GENERATED_OF_DATA: dict[Data, str] = {"image": "shapes-2d", "pointcloud": "primitives-3d"}


def generated_source(task: str) -> str:
    """The generated data set that serves `task` (when the user names none)."""
    return GENERATED_OF_DATA[task_spec(task).data]


def tasks_of_source(kind: str) -> list[str]:
    """The tasks whose samples the source `kind` holds."""
    data, targets = TARGETS_OF_SOURCE[kind]
    return [spec.name for spec in TASKS.values() if spec.data == data and spec.target in targets]


def detect_format(root: Path) -> str:
    """The user format of the folder `root`, told from its layout."""
    if not root.is_dir():
        raise DatasetError(root, "no such directory")
    if (root / "ImageSets" / "Segmentation").is_dir():
        return "voc"
    if (root / POOLED_ANNOTATIONS).is_file() or any((root / "annotations").glob("instances_*.json")):
        return "coco"
    if (root / CATEGORY_FILE).is_file():
        return "shapenet-part"
    if (root / TEXT_NAMES_FILE).is_file():
        return "modelnet40"
    h5_files = split_files(root, ["train", "val", "test"])
    if h5_files:
        return "shapenet-part" if has_dataset(h5_files[0], "pid") else "modelnet40"
    if any(path.is_dir() and not path.name.startswith(".") for path in root.iterdir()):
        return "imagefolder"
    raise DatasetError(
        root,
        "cannot tell the data set format from the folder layout; "
        f"name it as <format>:<path>, format one of {', '.join(FORMATS)}",
    )


def _request(
    task: str, split: str, size: int | None, num_samples: int | None, num_points: int | None, seed: int
) -> DatasetRequest:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    spec = task_spec(task)
    image_size = size or SMALLER_IMAGES.get(task, DEFAULT_IMAGE_SIZE)
    return DatasetRequest(
        spec.data, spec.target, split, image_size, num_points or DEFAULT_NUM_POINTS, num_samples, seed
    )


def open_dataset(
    source: str,
    task: str,
    split: Split,
    *,
    size: int | None = None,
    num_samples: int | None = None,
    num_points: int | None = None,
    seed: int = 0,
) -> Dataset:
    """The `split` of data set `source` as canonical samples of `task` (see `canonical`).

    `source`: "shapes-2d", "primitives-3d", a folder (format told from its layout) or
    "<format>:<folder>". Images come at `size` x `size` (default 128; 64 for
    classification, 32 for generation); clouds with `num_points` points (default
    1024). Generated splits hold `num_samples` samples (default 4000 train / 500 test) and are
    deterministic by `seed`, train and test drawn from disjoint streams; a user's split is
    capped at `num_samples` (a seeded subset). Raises ValueError for a task the source cannot
    serve and DatasetError (path and reason) for missing, corrupt or inconsistent files.
    """
    request = _request(task, split, size, num_samples, num_points, seed)
    prefix, _, rest = source.partition(":")
    if source in GENERATED:
        kind, root = source, None
    elif prefix in FORMATS and rest:
        kind, root = prefix, Path(rest)
    else:
        root = Path(source)
        kind = detect_format(root)
    if task not in tasks_of_source(kind):
        raise ValueError(f"{kind} data serves tasks {', '.join(tasks_of_source(kind))}, not {task!r}")
    return GENERATED[kind](request) if root is None else FORMATS[kind](root, request)
