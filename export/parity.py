"""Parity: does the exported graph compute what the PyTorch model computes?

Two measures over the same inputs: the largest absolute difference of each output, and the
task-level agreement (same top-1 class, same mask pixel, same point label, matched boxes, same
8-bit pixel of a generated image). A graph passes when every output is within
`max_abs_error` and the agreement reaches `min_agreement`.

Detection outputs are compared after matching, not slot by slot: top-K may order two
near-equal scores differently in two runtimes, which moves whole boxes between slots without any
detection changing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from easerve.artifacts.tasks import Answer, task_spec
from easerve.export.onnx_graph import GraphTensor
from easerve.model_defs.registry import ModelEntry

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
# A reproduced instance: its detection reproduced, and at most this fraction of the pixels of its
# two masks (cut at 0.5) in only one of them.
INSTANCE_MASK_TOLERANCE = 0.01

# Sizes of the symbolic dims for the random-input check: none equals the export example's, so a
# dimension that the exporter silently fixed shows up as a failure.
PROBE_DIMS = {"batch": 3, "height": 96, "width": 160, "points": 512}

AGREEMENT_UNITS: dict[Answer, str] = {
    "labels": "same top-1 class per sample",
    "pixel-labels": "same class per mask pixel",
    "point-labels": "same part label per point",
    "boxes": f"detections (score > {DETECTION_SCORE_FLOOR}) matched by label, box within "
    f"{DETECTION_BOX_TOLERANCE} px and score within {DETECTION_SCORE_TOLERANCE} (ties at a full "
    "top-K cut-off excepted)",
    "image": "same 8-bit value per generated pixel",
    "instance-masks": "instances matched as detections are, with at most "
    f"{INSTANCE_MASK_TOLERANCE:.0%} of their masks' pixels (cut at 0.5) in only one",
}


@dataclass(frozen=True)
class ParityThresholds:
    max_abs_error: float = 1e-4
    min_agreement: float = 0.999


@dataclass
class Comparison:
    """Accumulated over batches: worst absolute error per output, and agreeing / compared units."""

    max_abs_error: dict[str, float] = field(default_factory=dict)
    agreeing: int = 0
    compared: int = 0

    def add(self, other: Comparison) -> None:
        for name, error in other.max_abs_error.items():
            self.max_abs_error[name] = max(self.max_abs_error.get(name, 0.0), error)
        self.agreeing += other.agreeing
        self.compared += other.compared

    @property
    def agreement(self) -> float:
        return self.agreeing / self.compared if self.compared else 1.0


@dataclass
class ParityReport:
    """What `measure_parity` found on `samples` samples; `agreement_unit` says what agreed."""

    samples: int
    comparison: Comparison
    agreement_unit: str

    @property
    def max_abs_error(self) -> float:
        return max(self.comparison.max_abs_error.values(), default=0.0)

    @property
    def agreement(self) -> float:
        return self.comparison.agreement


class ParityError(RuntimeError):
    """The exported graph disagrees with PyTorch; the message names the output and the size."""


def _abs_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    if reference.shape != candidate.shape:
        return math.inf
    error = float(np.max(np.abs(reference.astype(np.float64) - candidate.astype(np.float64)), initial=0.0))
    return math.inf if math.isnan(error) else error


def _elementwise_errors(
    names: Sequence[str], reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]
) -> dict[str, float]:
    return {n: _abs_error(r, c) for n, r, c in zip(names, reference, candidate, strict=True)}


def _same_argmax(axis: int) -> Callable[[np.ndarray, np.ndarray], tuple[int, int]]:
    def compare(reference: np.ndarray, candidate: np.ndarray) -> tuple[int, int]:
        if reference.shape != candidate.shape:
            return 0, reference.argmax(axis).size
        same = reference.argmax(axis) == candidate.argmax(axis)
        return int(same.sum()), same.size

    return compare


def _same_8bit_pixels(reference: np.ndarray, candidate: np.ndarray) -> tuple[int, int]:
    def to_8bit(image: np.ndarray) -> np.ndarray:
        return np.clip(np.round((image + 1) * 127.5), 0, 255)

    if reference.shape != candidate.shape:
        return 0, reference.size
    same = to_8bit(reference) == to_8bit(candidate)
    return int(same.sum()), same.size


def _elementwise(
    agreement: Callable[[np.ndarray, np.ndarray], tuple[int, int]],
) -> Callable[[Sequence[str], Sequence[np.ndarray], Sequence[np.ndarray]], Comparison]:
    """Errors per output, slot by slot, and `agreement` over the first output."""

    def compare(names: Sequence[str], reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> Comparison:
        agreeing, compared = agreement(reference[0], candidate[0])
        return Comparison(_elementwise_errors(names, reference, candidate), agreeing, compared)

    return compare


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


def _detection_comparison(names: Sequence[str], matches: list[DetectionMatch], required: int) -> Comparison:
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
    return _detection_comparison(names, *match_detections(reference, candidate))


def compare_instances(
    names: Sequence[str], reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]
) -> Comparison:
    """Detections matched as `compare_detections` does, then their masks (the fourth output): an
    instance agrees when its detection is reproduced and at most `INSTANCE_MASK_TOLERANCE` of the
    pixels in either mask (cut at 0.5) are in only one. The masks' error is measured where both
    graphs keep the pixel inside the box: a box edge moved by float noise moves a whole column of
    the box window, which the agreement counts instead."""
    matches, required = match_detections(reference, candidate)
    result = _detection_comparison(names, matches, required)
    masks_name, reference_masks, candidate_masks = names[3], reference[3], candidate[3]
    error, agreeing = 0.0, 0
    for match in matches:
        ours = reference_masks[match.image, match.reference]
        theirs = candidate_masks[match.image, match.candidate]
        if ours.shape != theirs.shape:
            error = math.inf
            continue
        both = (ours > 0) & (theirs > 0)
        error = max(error, _abs_error(ours[both], theirs[both]))
        inside, also_inside = ours >= 0.5, theirs >= 0.5
        differing = np.count_nonzero(inside != also_inside)
        agreeing += differing <= INSTANCE_MASK_TOLERANCE * max(1, np.count_nonzero(inside | also_inside))
    result.max_abs_error[masks_name] = error
    result.agreeing = agreeing
    return result


# How two runtimes' outputs are compared, per answer kind (`artifacts.tasks`).
COMPARISONS: dict[Answer, Callable[[Sequence[str], Sequence[np.ndarray], Sequence[np.ndarray]], Comparison]] = {
    "labels": _elementwise(_same_argmax(-1)),
    "pixel-labels": _elementwise(_same_argmax(1)),
    "point-labels": _elementwise(_same_argmax(-1)),
    "image": _elementwise(_same_8bit_pixels),
    "boxes": compare_detections,
    "instance-masks": compare_instances,
}


def compare_outputs(
    task: str, names: Sequence[str], reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]
) -> Comparison:
    """Errors per output and task-level agreement of one batch of outputs of both runtimes."""
    return COMPARISONS[task_spec(task).answer](names, reference, candidate)


def _as_numpy(outputs: torch.Tensor | Sequence[torch.Tensor]) -> list[np.ndarray]:
    tensors = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    return [t.detach().cpu().numpy() for t in tensors]


def measure_parity(
    task: str,
    output_names: Sequence[str],
    reference: Callable[..., torch.Tensor | Sequence[torch.Tensor]],
    candidate: Callable[..., torch.Tensor | Sequence[torch.Tensor]],
    batches: Iterable[Sequence[torch.Tensor]],
) -> ParityReport:
    """Run both models (torch tensors in, tensor or tuple out) on every batch and compare."""
    total = Comparison()
    samples = 0
    with torch.no_grad():
        for inputs in batches:
            total.add(compare_outputs(task, output_names, _as_numpy(reference(*inputs)), _as_numpy(candidate(*inputs))))
            samples += int(inputs[0].shape[0])
    return ParityReport(samples, total, AGREEMENT_UNITS[task_spec(task).answer])


def check_parity(report: ParityReport, thresholds: ParityThresholds, what: str) -> None:
    """Raise ParityError naming every output over the error bound and any agreement shortfall."""
    problems = [
        f"output {name!r} differs by up to {error:.3g} (allowed {thresholds.max_abs_error:g})"
        for name, error in report.comparison.max_abs_error.items()
        if not error <= thresholds.max_abs_error
    ]
    if report.agreement < thresholds.min_agreement:
        c = report.comparison
        problems.append(
            f"task agreement {report.agreement:.4%} ({c.compared - c.agreeing} of {c.compared} "
            f"differ; {report.agreement_unit}) is below {thresholds.min_agreement:.1%}"
        )
    if problems:
        raise ParityError(f"{what}: " + "; ".join(problems))


def random_inputs(entry: ModelEntry, graph_inputs: Sequence[GraphTensor], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Seeded random inputs for the graph at the PROBE_DIMS sizes of its symbolic dims: standard
    normal floats, integer inputs (class labels) in the registry's range."""
    generator = torch.Generator().manual_seed(seed)
    highs = {spec.name: spec.high for spec in entry.inputs}
    tensors = []
    for tensor in graph_inputs:
        shape = tuple(PROBE_DIMS[d] if isinstance(d, str) else d for d in tensor.shape)
        if tensor.dtype == "int64":
            tensors.append(torch.randint(0, highs.get(tensor.name) or 1, shape, generator=generator))
        else:
            tensors.append(torch.randn(shape, generator=generator))
    return tuple(tensors)
