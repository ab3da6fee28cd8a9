"""Reading the arrays of the HDF5 point-cloud layouts (`ply_data_<split>*.h5`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from easerve.training.datasets.errors import DatasetError


def split_files(root: Path, file_splits: Sequence[str]) -> list[Path]:
    """The sorted `root/ply_data_<s>*.h5` files for every s in `file_splits`."""
    return sorted(path for s in file_splits for path in root.glob(f"ply_data_{s}*.h5"))


def has_dataset(path: Path, name: str) -> bool:
    """Whether the HDF5 file at `path` has a top-level dataset `name` (False if unreadable)."""
    try:
        with h5py.File(path, "r") as file:
            return name in file
    except OSError:
        return False


def read_arrays(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The top-level datasets `names` of the HDF5 file at `path`, all with the same length."""
    try:
        with h5py.File(path, "r") as file:
            missing = [name for name in names if name not in file]
            if missing:
                raise DatasetError(path, f"no dataset {missing} (has {sorted(file.keys())})")
            arrays = {name: file[name][()] for name in names}
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except OSError as error:
        raise DatasetError(path, f"not a readable HDF5 file ({error})") from error
    scalars = [name for name, array in arrays.items() if array.ndim == 0]
    if scalars:
        raise DatasetError(path, f"datasets {scalars} are scalars, expected arrays")
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise DatasetError(path, f"datasets differ in length: {lengths}")
    return arrays
