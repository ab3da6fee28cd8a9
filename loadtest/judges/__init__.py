"""The judges of the endpoint check (`loadtest.check`): is an answer right for the sample it was
asked about? One module per kind of answer; `loadtest.check` registers them by (request, answer)
kind in `CHECKS`.

A judge takes the answer's JSON and the bundled samples and returns whether the answer is right
and a line saying what it found.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

import numpy as np
from PIL import Image

from easerve.loadtest.samples import SampleSet

Judge = Callable[[dict, SampleSet], tuple[bool, str]]


def decode_png(encoded: str) -> np.ndarray:
    """The pixels of a base64-encoded PNG of an answer."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))
