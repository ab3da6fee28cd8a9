"""Choosing which items of a user's data set a split or a smaller run uses."""

from __future__ import annotations

import numpy as np

from easerve.training.datasets.canonical import Split

HOLDOUT_FRACTION = 0.1
# Fixed, not the training seed: a folder's test split must be the same for every training run.
HOLDOUT_SEED = 20210505


def holdout_split(num_items: int, split: Split) -> np.ndarray:
    """Sorted indices of `split` for a data set that ships as one pool: a fixed pseudo-random
    `HOLDOUT_FRACTION` (at least one item when there are two or more) is the test split."""
    num_test = max(round(num_items * HOLDOUT_FRACTION), 1 if num_items >= 2 else 0)
    order = np.random.default_rng(HOLDOUT_SEED).permutation(num_items)
    chosen = order[:num_test] if split == "test" else order[num_test:]
    return np.sort(chosen)


def limit_items(num_items: int, num_samples: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most `num_samples` items (all when None or not fewer), a seeded
    random subset otherwise, so a short run still sees every class."""
    if num_samples is None or num_samples >= num_items:
        return np.arange(num_items)
    return np.sort(np.random.default_rng(seed).choice(num_items, num_samples, replace=False))
