"""Data sets for every task: generated shapes and primitives, and the formats users bring.

`open_dataset` is the one entry point; every data set yields the canonical samples described in
`training.datasets.canonical` and has `class_names`.
"""

from easerve.training.datasets.canonical import SPLITS, Split, collate_for
from easerve.training.datasets.errors import DatasetError
from easerve.training.datasets.sources import generated_source, open_dataset

__all__ = ["SPLITS", "DatasetError", "Split", "collate_for", "generated_source", "open_dataset"]
