"""Fills `artifacts.manifest.Manifest` for an exported model: what the service needs to serve it
without its code, and the evidence (parity, metrics, hashes, versions) of how it was made."""

from __future__ import annotations

import platform
from pathlib import Path

import onnx
import onnxruntime
import onnxscript
import torch

from easerve.artifacts.manifest import (
    FileInfo,
    Manifest,
    Parity,
    Preprocessing,
    Quantization,
    TensorInfo,
    describe_file,
)
from easerve.export.onnx_graph import OPSET, GraphTensor, graph_tensors
from easerve.export.parity import ParityReport
from easerve.model_defs.registry import ModelEntry
from easerve.training.checkpoint import WEIGHTS_FILE, CheckpointInfo, code_version


def exporter_versions() -> dict[str, str]:
    """Versions of everything that shaped the exported graph."""
    return {
        "easerve": code_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


def tensor_info(tensor: GraphTensor) -> TensorInfo:
    return TensorInfo(name=tensor.name, dtype=tensor.dtype, shape=list(tensor.shape))


def parity_record(
    report: ParityReport, dataset: str, random_report: ParityReport, random_shapes: dict[str, list[int]]
) -> Parity:
    """The manifest's parity section from the held-out and the random-input checks."""
    return Parity(
        samples=report.samples,
        max_abs_error=report.max_abs_error,
        task_agreement=report.agreement,
        metric=report.agreement_unit,
        dataset=dataset,
        per_output_max_abs_error=report.comparison.max_abs_error,
        random_inputs_max_abs_error=random_report.max_abs_error,
        random_input_shapes=random_shapes,
    )


def build_manifest(
    entry: ModelEntry,
    info: CheckpointInfo,
    model_dir: Path,
    onnx_file: str,
    parity: Parity,
    quantized: list[Quantization],
    max_batch_size: int,
    input_multiple: int | None = None,
) -> Manifest:
    """The manifest of the model in `model_dir`, whose graph is `model_dir / onnx_file`; the
    inputs and outputs are read from the saved graph, so they are what the file really takes;
    `input_multiple` is what the image model's H and W must be multiples of."""
    inputs, outputs = graph_tensors(model_dir / onnx_file)
    source: FileInfo = describe_file(model_dir, WEIGHTS_FILE)
    return Manifest(
        name=info.model,
        task=entry.task,
        attention=entry.attention,
        arch=entry.arch,
        description=entry.description,
        inputs=[tensor_info(t) for t in inputs],
        outputs=[tensor_info(t) for t in outputs],
        preprocessing=Preprocessing.model_validate(info.preprocessing | {"input_multiple": input_multiple}),
        labels=list(info.class_names),
        max_batch_size=max_batch_size,
        onnx=describe_file(model_dir, onnx_file),
        opset=OPSET,
        quantized=quantized,
        parity=parity,
        source_checkpoint=source,
        metrics=dict(info.metrics),
        exporter_versions=exporter_versions(),
    )
