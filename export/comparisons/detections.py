"""Detections (boxes, scores, labels) compared after matching, not slot by slot: top-K may order
two near-equal scores differently in two runtimes, which moves whole boxes between slots without
any detection changing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from easerve.export.comparisons import AnswerComparison, Comparison

# Detections above this score must be reproduced; below it, slots are background filler.
DETECTION_SCORE_FLOOR = 0.05
# A reproduced detection: same label, every box coordinate within this many input pixels
# (coordinates, not IoU: an untrained size head gives empty boxes, whose IoU is 0 even with
# themselves), score within this.
DETECTION_BOX_TOLERANCE = 0.5
DETECTION_SCORE_TOLERANCE = 0.01
# When every top-K slot holds a detection, the runtimes may keep different ones at the cut-off: a
# heat-map peak that float noise makes (or unmakes) on a plateau elsewhere pushes the lowest one
# out. Reference detections this close to the lowest kept score need not be reproduced.
DETECTION_CUTOFF_BAND = 1e-4


def _required_detections(scores: np.ndarray) -> np.ndarray:
    """Slots of one image's reference detections that the candidate must reproduce: above the
    score floor and, when the top-K is full, clearly above its cut-off."""
    floor = DETECTION_SCORE_FLOOR
    if scores.min() > DETECTION_SCORE_FLOOR:
        floor = float(scores.min()) + DETECTION_CUTOFF_BAND
    return np.flatnonzero(scores > floor)


@dataclass(frozen=True)
class DetectionMatch:
    """A required reference detection and the candidate's detection that reproduces it."""

    image: int
    reference: int
    candidate: int
    box_error: float
    score_error: float


def match_detections(
    reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]
) -> tuple[list[DetectionMatch], int]:
    """Match each required reference detection (see `_required_detections`) of (boxes, scores,
    labels) to the candidate's nearest same-label box; returns the reproduced ones and how many
    were required."""
    matches, required = [], 0
    for image, (ref_boxes, ref_scores, ref_labels, boxes, scores, labels) in enumerate(
        zip(*reference[:3], *candidate[:3], strict=True)
    ):
        for index in _required_detections(ref_scores):
            required += 1
            same_label = np.flatnonzero(labels == ref_labels[index])
            if same_label.size == 0:
                continue
            distances = np.abs(boxes[same_label] - ref_boxes[index]).max(axis=1)
            nearest = int(same_label[int(np.argmin(distances))])
            box_error = float(distances.min())
            score_error = abs(float(ref_scores[index]) - float(scores[nearest]))
            if box_error <= DETECTION_BOX_TOLERANCE and score_error <= DETECTION_SCORE_TOLERANCE:
                matches.append(DetectionMatch(image, int(index), nearest, box_error, score_error))
    return matches, required


def detection_comparison(names: Sequence[str], matches: list[DetectionMatch], required: int) -> Comparison:
    """The boxes' and scores' errors over `matches` (labels match exactly); agreement counts the
    matches out of the `required` detections."""
    boxes_name, scores_name, labels_name = names[:3]
    errors = {
        boxes_name: max((m.box_error for m in matches), default=0.0),
        scores_name: max((m.score_error for m in matches), default=0.0),
        labels_name: 0.0,
    }
    return Comparison(errors, len(matches), required)


def compare_detections(
    names: Sequence[str], reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]
) -> Comparison:
    """Errors of the matched detections (`match_detections`); agreement counts them."""
    return detection_comparison(names, *match_detections(reference, candidate))


BOXES = AnswerComparison(
    compare_detections,
    f"detections (score > {DETECTION_SCORE_FLOOR}) matched by label, box within "
    f"{DETECTION_BOX_TOLERANCE} px and score within {DETECTION_SCORE_TOLERANCE} (ties at a full "
    "top-K cut-off excepted)",
)
