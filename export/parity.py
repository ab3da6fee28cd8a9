"""Parity: does the exported graph compute what the PyTorch model computes?

Two measures over the same inputs: the largest absolute difference of each output, and the
task-level agreement (same top-1 class, same mask pixel, same point label, matched boxes, same
8-bit pixel of a generated image). A graph passes when every output is within
`max_abs_error` and the agreement reaches `min_agreement`.

How outputs are compared depends on the kind of answer: each kind's comparison lives in its own
module of `export.comparisons` and is registered here, in `COMPARISONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from easerve.artifacts.tasks import Answer, task_spec
from easerve.export.comparisons import AnswerComparison, Comparison, detections, elementwise, instances
from easerve.export.onnx_graph import GraphTensor
from easerve.model_defs.registry import ModelEntry

# Sizes of the symbolic dims for the random-input check: none equals the export example's, so a
# dimension that the exporter silently fixed shows up as a failure.
PROBE_DIMS = {"batch": 3, "height": 96, "width": 160, "points": 512}

# How two runtimes' outputs are compared, and what their agreement counts, per answer kind
# (`artifacts.tasks`).
COMPARISONS: dict[Answer, AnswerComparison] = {
    "labels": elementwise.LABELS,
    "pixel-labels": elementwise.PIXEL_LABELS,
    "point-labels": elementwise.POINT_LABELS,
    "image": elementwise.IMAGE,
    "boxes": detections.BOXES,
    "instance-masks": instances.INSTANCE_MASKS,
}
AGREEMENT_UNITS: dict[Answer, str] = {answer: comparison.unit for answer, comparison in COMPARISONS.items()}


@dataclass(frozen=True)
class ParityThresholds:
    max_abs_error: float = 1e-4
    min_agreement: float = 0.999


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


def compare_outputs(
    task: str, names: Sequence[str], reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]
) -> Comparison:
    """Errors per output and task-level agreement of one batch of outputs of both runtimes."""
    return COMPARISONS[task_spec(task).answer].compare(names, reference, candidate)


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
