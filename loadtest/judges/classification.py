"""Image classification: the top-1 label of the first image sample."""

from __future__ import annotations

from easerve.loadtest.samples import SampleSet


def check_classify(answer: dict, samples: SampleSet) -> tuple[bool, str]:
    """Right when the top-1 label is the first image sample's label."""
    expected = samples.images[0].label
    top = answer["results"][0]["top_k"][0]["label"]
    return top == expected, f"top-1 {top!r}, expected {expected!r}"
