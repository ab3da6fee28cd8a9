"""Point clouds: the class of the first cloud, and its part label per point."""

from __future__ import annotations

from easerve.loadtest.samples import SampleSet

MIN_PART_ACCURACY = 0.7


def check_pointcloud_classify(answer: dict, samples: SampleSet) -> tuple[bool, str]:
    """Right when the top-1 label is the first cloud's label."""
    expected = samples.clouds[0].label
    top = answer["top_k"][0]["label"]
    return top == expected, f"top-1 {top!r}, expected {expected!r}"


def check_pointcloud_segment(answer: dict, samples: SampleSet) -> tuple[bool, str]:
    """Right when there is one part label per point and at least MIN_PART_ACCURACY of them are the
    cloud's."""
    truth = samples.clouds[0].parts
    parts = answer["parts"]
    if len(parts) != len(truth):
        return False, f"{len(parts)} part labels for {len(truth)} points"
    accuracy = sum(p == t for p, t in zip(parts, truth)) / len(truth)
    return accuracy >= MIN_PART_ACCURACY, f"part accuracy {accuracy:.3f}"
