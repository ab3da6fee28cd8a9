"""ShapeNet-part point clouds: per-point parts (part segmentation), the category (classification).

Layouts:
- HDF5 (`shapenet_part_seg_hdf5_data`): `root/ply_data_{train,val,test}*.h5`, each with `data`
  (N, P, 3), `label` (N, 1) category index and `pid` (N, P) global part index.
- text (`shapenetcore_partanno_segmentation_benchmark_v0_normal`): `synsetoffset2category.txt`
  (`Airplane<TAB>02691156` lines), `<synset>/<shape>.txt` with `x y z nx ny nz part` lines, and
  the split lists `train_test_split/shuffled_{train,val,test}_file_list.json` (entries
  `shape_data/<synset>/<shape>`).
The train split is the train and val files together, as in the usual benchmark protocol.

Categories and parts are the benchmark's 16 categories and 50 global parts, each category owning
a contiguous range of part indices; class names are `Category` and `Category/<k>`. A shape whose
parts lie outside its category's range is an error. Clouds are read up front, resampled to
`num_points` and normalised (`point_clouds.canonical_cloud`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from easerve.artifacts.tasks import Target
from easerve.training.datasets.canonical import DatasetRequest, PointArrays, Split
from easerve.training.datasets.errors import DatasetError
from easerve.training.datasets.hdf5_arrays import read_arrays, split_files
from easerve.training.datasets.list_files import read_lines
from easerve.training.datasets.point_clouds import canonical_clouds
from easerve.training.datasets.splits import limit_items
from easerve.training.datasets.streams import sample_rng
from easerve.training.datasets.text_clouds import read_text_cloud

# (category, number of parts) in the benchmark's category order; global part ids run through them.
SHAPENET_PART_CATEGORIES: tuple[tuple[str, int], ...] = (
    ("Airplane", 4),
    ("Bag", 2),
    ("Cap", 2),
    ("Car", 4),
    ("Chair", 4),
    ("Earphone", 3),
    ("Guitar", 3),
    ("Knife", 2),
    ("Lamp", 4),
    ("Laptop", 2),
    ("Motorbike", 6),
    ("Mug", 2),
    ("Pistol", 3),
    ("Rocket", 3),
    ("Skateboard", 3),
    ("Table", 3),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(name for name, _ in SHAPENET_PART_CATEGORIES)
PART_NAMES: tuple[str, ...] = tuple(f"{name}/{k}" for name, count in SHAPENET_PART_CATEGORIES for k in range(count))
# The global index of each category's first part.
FIRST_PART: tuple[int, ...] = tuple(
    sum(count for _, count in SHAPENET_PART_CATEGORIES[:i]) for i in range(len(SHAPENET_PART_CATEGORIES))
)
FILE_SPLITS: dict[Split, tuple[str, ...]] = {"train": ("train", "val"), "test": ("test",)}
CATEGORY_FILE = "synsetoffset2category.txt"


@dataclass(frozen=True)
class PartShapes:
    """Shapes of one split: clouds (N, num_points, 3), categories (N,), parts (N, num_points)."""

    points: np.ndarray
    categories: np.ndarray
    parts: np.ndarray

    def as_dataset(self, target: Target) -> PointArrays:
        """Samples labelled per point (parts) or per shape (category)."""
        if target == "point-labels":
            return PointArrays(self.points, self.parts, PART_NAMES)
        return PointArrays(self.points, self.categories, CATEGORY_NAMES)


def check_parts(path: Path, category: int, parts: np.ndarray) -> None:
    """DatasetError unless `category` is a benchmark category and all `parts` are its parts."""
    if not 0 <= category < len(SHAPENET_PART_CATEGORIES):
        raise DatasetError(path, f"category index {category} is not one of the {len(CATEGORY_NAMES)}")
    first, count = FIRST_PART[category], SHAPENET_PART_CATEGORIES[category][1]
    outside = parts[(parts < first) | (parts >= first + count)]
    if outside.size:
        reason = (
            f"a {CATEGORY_NAMES[category]} shape has parts {np.unique(outside).tolist()} "
            f"outside its parts {first}..{first + count - 1}"
        )
        raise DatasetError(path, reason)


def _canonical(
    clouds: list[np.ndarray],
    categories: list[int],
    parts: list[np.ndarray],
    indices: np.ndarray,
    request: DatasetRequest,
) -> PartShapes:
    """Canonical clouds of the shapes at `indices` (their positions in the whole split)."""
    rngs = (sample_rng(request.seed, request.split, "shapenet-part", int(index)) for index in indices)
    points, kept = canonical_clouds(clouds, request.num_points, rngs)
    chosen_parts = np.stack([shape_parts[k] for shape_parts, k in zip(parts, kept)]).astype(np.int64)
    return PartShapes(points, np.array(categories, np.int64), chosen_parts)


def _read_hdf5_file(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked clouds (N, P, 3), categories (N,) and parts (N, P) of one HDF5 file."""
    arrays = read_arrays(path, ["data", "label", "pid"])
    data, pid = arrays["data"], arrays["pid"].astype(np.int64)
    if data.ndim != 3 or data.shape[2] < 3 or pid.shape != data.shape[:2]:
        raise DatasetError(path, f"expected data (N, P, 3) and pid (N, P), got {data.shape} and {pid.shape}")
    categories = arrays["label"].reshape(len(data), -1)[:, 0].astype(np.int64)
    for category, parts in zip(categories, pid):
        check_parts(path, int(category), parts)
    return data[..., :3], categories, pid


def read_shapenet_part_hdf5(root: Path, request: DatasetRequest) -> PartShapes:
    """The requested split of a ShapeNet-part HDF5 folder (see the module docstring)."""
    files = split_files(root, FILE_SPLITS[request.split])
    if not files:
        raise DatasetError(root, f"no ply_data_{{{','.join(FILE_SPLITS[request.split])}}}*.h5 files")
    clouds, categories, parts = [], [], []
    for path in files:
        data, file_categories, pid = _read_hdf5_file(path)
        clouds += list(data)
        categories += file_categories.tolist()
        parts += list(pid)
    if not clouds:
        raise DatasetError(root, f"the {request.split} files hold no shapes")
    indices = limit_items(len(clouds), request.num_samples, request.seed)
    return _canonical(
        [clouds[i] for i in indices], [categories[i] for i in indices], [parts[i] for i in indices], indices, request
    )


def _split_entries(root: Path, split: Split) -> list[str]:
    entries = []
    for name in FILE_SPLITS[split]:
        path = root / "train_test_split" / f"shuffled_{name}_file_list.json"
        try:
            entries += json.loads(path.read_text())
        except FileNotFoundError:
            raise DatasetError(path, "split list not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DatasetError(path, f"not valid JSON ({error})") from error
    if not entries:
        raise DatasetError(root / "train_test_split", f"the {split} lists name no shapes")
    return entries


def read_shapenet_part_text(root: Path, request: DatasetRequest) -> PartShapes:
    """The requested split of a ShapeNet-part text folder (see the module docstring)."""
    category_of_synset = {}
    for line in read_lines(root / CATEGORY_FILE):
        name, synset = (line.split() + ["", ""])[:2]
        if name not in CATEGORY_NAMES or not synset:
            reason = f"line {line!r} is not '<ShapeNet-part category> <synset>'"
            raise DatasetError(root / CATEGORY_FILE, reason)
        category_of_synset[synset] = CATEGORY_NAMES.index(name)
    entries = _split_entries(root, request.split)
    indices = limit_items(len(entries), request.num_samples, request.seed)
    clouds, categories, parts = [], [], []
    for index in tqdm(indices, desc=f"reading ShapeNet-part {request.split}", unit="shape", disable=None):
        synset, shape = entries[index].split("/")[-2:]
        path = root / synset / f"{shape}.txt"
        if synset not in category_of_synset:
            raise DatasetError(path, f"synset {synset} is not in {CATEGORY_FILE}")
        table = read_text_cloud(path, None, 7)
        shape_parts = table[:, -1].astype(np.int64)
        check_parts(path, category_of_synset[synset], shape_parts)
        clouds.append(table[:, :3])
        categories.append(category_of_synset[synset])
        parts.append(shape_parts)
    return _canonical(clouds, categories, parts, indices, request)


def open_shapenet_part(root: Path, request: DatasetRequest) -> PointArrays:
    """The requested split of the ShapeNet-part data at `root`, in whichever layout it has, as
    samples of the requested task (pointcloud-segmentation or pointcloud-classification)."""
    if not root.is_dir():
        raise DatasetError(root, "no such directory")
    read = read_shapenet_part_text if (root / CATEGORY_FILE).is_file() else read_shapenet_part_hdf5
    return read(root, request).as_dataset(request.target)
