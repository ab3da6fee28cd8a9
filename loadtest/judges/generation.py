"""Generation: one RGB image drawn for the requested class."""

from __future__ import annotations

from easerve.loadtest.judges import decode_png
from easerve.loadtest.samples import SampleSet


def check_generate(answer: dict, samples: SampleSet) -> tuple[bool, str]:
    """Right when the answer holds exactly one image, with three channels."""
    images = [decode_png(encoded) for encoded in answer["images"]]
    shapes = {image.shape for image in images}
    passed = len(images) == 1 and all(len(shape) == 3 and shape[2] == 3 for shape in shapes)
    return passed, f"{len(images)} image(s) of shape {sorted(shapes)}"
