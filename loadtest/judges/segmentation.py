"""Semantic segmentation: the class mask of the first scene, pixel by pixel."""

from __future__ import annotations

from easerve.loadtest.judges import decode_png
from easerve.loadtest.samples import SampleSet

MIN_PIXEL_ACCURACY = 0.8


def check_segment(answer: dict, samples: SampleSet) -> tuple[bool, str]:
    """Right when the mask has the scene's size and at least MIN_PIXEL_ACCURACY of its pixels
    hold the scene's class."""
    truth = samples.scenes[0].maps["mask"]
    mask = decode_png(answer["results"][0]["mask_png"])
    if mask.shape != truth.shape:
        return False, f"mask shape {mask.shape}, expected {truth.shape}"
    accuracy = float((mask == truth).mean())
    return accuracy >= MIN_PIXEL_ACCURACY, f"pixel accuracy {accuracy:.3f}"
