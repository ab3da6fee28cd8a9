"""ModelNet40 point clouds (classification) in its two common layouts.

- HDF5 (`modelnet40_ply_hdf5_2048`): `root/ply_data_train*.h5` and `ply_data_test*.h5`, each
  with `data` (N, P, 3) and `label` (N, 1); class names are the lines of `root/shape_names.txt`.
- text (`modelnet40_normal_resampled`): `root/<class>/<class>_0001.txt` with comma-separated
  `x,y,z,nx,ny,nz` lines; class names in `modelnet40_shape_names.txt`; each split's shape ids
  (`airplane_0001`) in `modelnet40_train.txt` / `modelnet40_test.txt`.

Clouds are read up front (small once resampled), so errors show at once and epochs are cheap;
each is resampled to `num_points` and normalised (`point_clouds.canonical_cloud`). An empty
split is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from easerve.training.datasets.canonical import DatasetRequest, PointArrays
from easerve.training.datasets.errors import DatasetError
from easerve.training.datasets.hdf5_arrays import read_arrays, split_files
from easerve.training.datasets.list_files import read_lines
from easerve.training.datasets.point_clouds import canonical_clouds
from easerve.training.datasets.splits import limit_items
from easerve.training.datasets.streams import sample_rng
from easerve.training.datasets.text_clouds import read_text_cloud

HDF5_NAMES_FILE = "shape_names.txt"
TEXT_NAMES_FILE = "modelnet40_shape_names.txt"


def _checked_labels(path: Path, labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = labels.reshape(len(labels), -1)[:, 0].astype(np.int64)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        outside = np.unique(labels[bad]).tolist()
        raise DatasetError(path, f"labels {outside} outside the {num_classes} classes")
    return labels


def _dataset(
    clouds: list[np.ndarray], labels: list[int], indices: np.ndarray, class_names: list[str], request: DatasetRequest
) -> PointArrays:
    """Canonical clouds of the shapes at `indices` (their positions in the whole split)."""
    rngs = (sample_rng(request.seed, request.split, "modelnet40", int(index)) for index in indices)
    points, _ = canonical_clouds(clouds, request.num_points, rngs)
    return PointArrays(points, np.array(labels, np.int64), class_names)


def _read_hdf5_file(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Checked clouds (N, P, 3) and labels (N,) of one HDF5 file."""
    arrays = read_arrays(path, ["data", "label"])
    if arrays["data"].ndim != 3 or arrays["data"].shape[2] < 3:
        raise DatasetError(path, f"data should be (N, points, 3), got {arrays['data'].shape}")
    return arrays["data"][..., :3], _checked_labels(path, arrays["label"], num_classes)


def open_modelnet40_hdf5(root: Path, request: DatasetRequest) -> PointArrays:
    """The requested split of a ModelNet40 HDF5 folder (see the module docstring)."""
    class_names = read_lines(root / HDF5_NAMES_FILE)
    files = split_files(root, [request.split])
    if not files:
        raise DatasetError(root, f"no ply_data_{request.split}*.h5 files")
    clouds, labels = [], []
    for path in files:
        data, file_labels = _read_hdf5_file(path, len(class_names))
        clouds += list(data)
        labels += file_labels.tolist()
    if not clouds:
        raise DatasetError(root, f"the {request.split} files hold no shapes")
    indices = limit_items(len(clouds), request.num_samples, request.seed)
    return _dataset([clouds[i] for i in indices], [labels[i] for i in indices], indices, class_names, request)


def open_modelnet40_text(root: Path, request: DatasetRequest) -> PointArrays:
    """The requested split of a ModelNet40 text folder (see the module docstring)."""
    class_names = read_lines(root / TEXT_NAMES_FILE)
    list_file = root / f"modelnet40_{request.split}.txt"
    shape_ids = read_lines(list_file)
    indices = limit_items(len(shape_ids), request.num_samples, request.seed)
    clouds, labels = [], []
    for index in tqdm(indices, desc=f"reading ModelNet40 {request.split}", unit="shape", disable=None):
        shape_id = shape_ids[index]
        class_name = shape_id.rsplit("_", 1)[0]
        if class_name not in class_names:
            raise DatasetError(list_file, f"shape {shape_id!r} is of no class in {TEXT_NAMES_FILE}")
        clouds.append(read_text_cloud(root / class_name / f"{shape_id}.txt", ",", 3))
        labels.append(class_names.index(class_name))
    return _dataset(clouds, labels, indices, class_names, request)


def open_modelnet40(root: Path, request: DatasetRequest) -> PointArrays:
    """The requested split of the ModelNet40 data at `root`, in whichever layout it has."""
    if not root.is_dir():
        raise DatasetError(root, "no such directory")
    if (root / TEXT_NAMES_FILE).is_file():
        return open_modelnet40_text(root, request)
    return open_modelnet40_hdf5(root, request)
