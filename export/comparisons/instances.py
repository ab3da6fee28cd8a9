"""Instances (boxes, scores, labels, masks): detections matched as `detections` matches them,
then each matched pair's masks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from easerve.export.comparisons import AnswerComparison, Comparison, abs_error
from easerve.export.comparisons.detections import detection_comparison, match_detections

# A reproduced instance: its detection reproduced, and at most this fraction of the pixels of its
# two masks (cut at 0.5) in only one of them.
INSTANCE_MASK_TOLERANCE = 0.01


def compare_instances(
    names: Sequence[str], reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]
) -> Comparison:
    """Detections matched as `compare_detections` does, then their masks (the fourth output): an
    instance agrees when its detection is reproduced and at most `INSTANCE_MASK_TOLERANCE` of the
    pixels in either mask (cut at 0.5) are in only one. The masks' error is measured where both
    graphs keep the pixel inside the box: a box edge moved by float noise moves a whole column of
    the box window, which the agreement counts instead."""
    matches, required = match_detections(reference, candidate)
    result = detection_comparison(names, matches, required)
    masks_name, reference_masks, candidate_masks = names[3], reference[3], candidate[3]
    error, agreeing = 0.0, 0
    for match in matches:
        ours = reference_masks[match.image, match.reference]
        theirs = candidate_masks[match.image, match.candidate]
        if ours.shape != theirs.shape:
            error = math.inf
            continue
        both = (ours > 0) & (theirs > 0)
        error = max(error, abs_error(ours[both], theirs[both]))
        inside, also_inside = ours >= 0.5, theirs >= 0.5
        differing = np.count_nonzero(inside != also_inside)
        agreeing += differing <= INSTANCE_MASK_TOLERANCE * max(1, np.count_nonzero(inside | also_inside))
    result.max_abs_error[masks_name] = error
    result.agreeing = agreeing
    return result


INSTANCE_MASKS = AnswerComparison(
    compare_instances,
    "instances matched as detections are, with at most "
    f"{INSTANCE_MASK_TOLERANCE:.0%} of their masks' pixels (cut at 0.5) in only one",
)
