"""Random streams of the generated data sets.

Every sample has its own stream, keyed by (seed, split, generator, index): train and test never
share a stream, two generators never share one, and sample i is the same whatever the number of
samples asked for (so a small split is a prefix of a large one).
"""

from __future__ import annotations

import zlib

import numpy as np

from easerve.training.datasets.canonical import SPLITS, Split


def sample_rng(seed: int, split: Split, generator: str, index: int) -> np.random.Generator:
    """The random generator of sample `index` of `split` of the generated set `generator`."""
    return np.random.default_rng((seed, SPLITS.index(split), zlib.crc32(generator.encode()), index))
