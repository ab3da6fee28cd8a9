"""Exporting one checkpoint folder: ONNX checked for parity, optional INT8 / FP16 graphs guarded
by the task metric, the model's peak working memory by input size (`memory_profile`), and the
manifest, all written next to the checkpoint.

Nothing is published before the FP32 graph has passed parity: files are staged in a temporary
folder and moved into the model folder at the end, the manifest last. A refused INT8 / FP16
graph is left out (and an older one removed), so the folder never holds files the manifest
does not vouch for.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from easerve.artifacts.accuracy_gate import (
    DEFAULT_MAX_DROP_POINTS,
    PrecisionRefused,
    check_metric_drop,
)
from easerve.artifacts.machine import cpu_model
from easerve.artifacts.manifest import (
    Manifest,
    Parity,
    Preprocessing,
    Quantization,
    describe_file,
    load_manifest,
    save_manifest,
    sha256_file,
)
from easerve.artifacts.memory_model import MemoryModel
from easerve.export.fp16 import convert_to_fp16
from easerve.export.held_out import input_batches
from easerve.export.latency import time_calls
from easerve.export.manifest_writer import build_manifest, parity_record, tensor_info
from easerve.export.memory_profile import measure_memory
from easerve.export.onnx_graph import export_onnx, graph_tensors, signature_of
from easerve.export.ort_model import OrtModel
from easerve.export.parity import ParityThresholds, check_parity, measure_parity, random_inputs
from easerve.export.quantize import calibration_feeds, quantize_int8
from easerve.export.task_metric import evaluate_graph, primary_metric
from easerve.model_defs.registry import ModelEntry, get_model_entry
from easerve.training.checkpoint import INFO_FILE, WEIGHTS_FILE, CheckpointInfo, load_checkpoint
from easerve.training.held_out import HeldOutData, open_split
from easerve.training.tasks import DEFAULT_JUDGE

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
FP16_FILE = "model.fp16.onnx"
VARIANT_FILES = (INT8_FILE, FP16_FILE)
# Batch 2 keeps the exporter from specialising the batch axis to 1.
EXAMPLE_BATCH = 2
CHECK_BATCH = 32
CALIBRATION_BATCH = 16
SPEED_BATCH = 8

Log = Callable[[str], None]


@dataclass(frozen=True)
class ExportOptions:
    """What to produce and how strictly to check it (defaults: the parity and INT8 limits in docs/export.md)."""

    int8: bool = False
    fp16: bool = False
    max_batch: int = 32
    parity_samples: int = 500
    calibration_samples: int = 128
    max_drop_points: float = DEFAULT_MAX_DROP_POINTS
    thresholds: ParityThresholds = field(default_factory=ParityThresholds)
    threads: int | None = None


@dataclass
class ExportResult:
    manifest: Manifest
    # One message per requested INT8 / FP16 graph that was not written, saying why.
    refused: list[str] = field(default_factory=list)


@dataclass
class _Context:
    """What every step of one export needs."""

    model_dir: Path
    model: nn.Module
    info: CheckpointInfo
    entry: ModelEntry
    staging: Path
    test: HeldOutData
    options: ExportOptions
    log: Log


@contextmanager
def _step(log: Log, label: str) -> Iterator[None]:
    started = time.perf_counter()
    log(f"{label} ...")
    yield
    log(f"{label}: done in {time.perf_counter() - started:.1f}s")


def has_checkpoint(model_dir: Path) -> bool:
    return (model_dir / INFO_FILE).is_file() and (model_dir / WEIGHTS_FILE).is_file()


def current_manifest(model_dir: Path) -> Manifest | None:
    """The model folder's manifest if it still describes the folder: its ONNX file and its
    source checkpoint have the recorded hashes. None when anything changed or is missing."""
    try:
        manifest = load_manifest(model_dir)
    except (OSError, ValueError):
        return None
    onnx_path = model_dir / manifest.onnx.path
    checkpoint = manifest.source_checkpoint
    if checkpoint is None or not onnx_path.is_file() or not (model_dir / checkpoint.path).is_file():
        return None
    if sha256_file(onnx_path) != manifest.onnx.sha256:
        return None
    return manifest if sha256_file(model_dir / checkpoint.path) == checkpoint.sha256 else None


def export_checkpoint(model_dir: Path, options: ExportOptions, log: Log = print) -> ExportResult:
    """Export the checkpoint in `model_dir` and publish model.onnx (+ variants) and manifest.json.

    Raises ParityError (nothing written) when the ONNX graph disagrees with PyTorch on the
    held-out split or on random inputs at other shapes, ExportError when it cannot be exported
    as a portable graph. A refused INT8 / FP16 graph is reported in `ExportResult.refused`.
    """
    model, info = load_checkpoint(model_dir)
    entry = get_model_entry(info.model)
    with tempfile.TemporaryDirectory(prefix="easerve-export-") as scratch:
        staging = Path(scratch)
        fp32 = staging / ONNX_FILE
        with _step(log, "ONNX export (dynamo, opset 18) + onnxruntime graph optimisation"):
            export_onnx(model, entry.example_inputs(EXAMPLE_BATCH), signature_of(entry), fp32)
        test = open_split(info, "test", options.parity_samples)
        context = _Context(model_dir, model, info, entry, staging, test, options, log)
        with _step(log, f"parity against PyTorch on the {test.description}"):
            parity = _check_parity(context, fp32)
        variants, refused = _reduced_precision_variants(context, fp32)
        input_multiple = getattr(model, "input_multiple", None)
        with _step(log, "peak working memory by input size (onnxruntime, a fresh process per graph)"):
            memory = _memory_model(
                [fp32, *(staging / v.file.path for v in variants)], info.preprocessing, input_multiple
            )
        _publish(staging, model_dir, [ONNX_FILE, *(v.file.path for v in variants)], log)
    manifest = build_manifest(entry, info, model_dir, ONNX_FILE, parity, variants, options.max_batch, input_multiple)
    manifest = manifest.model_copy(update={"memory": memory})
    save_manifest(model_dir, manifest)
    return ExportResult(manifest, refused)


def _memory_model(graphs: list[Path], preprocessing: dict, input_multiple: int | None) -> MemoryModel:
    """The memory model of the FP32 graph `graphs[0]` and its variants."""
    inputs = [tensor_info(tensor) for tensor in graph_tensors(graphs[0])[0]]
    checked = Preprocessing.model_validate(preprocessing | {"input_multiple": input_multiple})
    return measure_memory(graphs, inputs, checked)


def add_memory_model(model_dir: Path, log: Log = print) -> Manifest:
    """Measure the memory model of an exported model whose manifest is current and write it to
    the manifest, nothing else changed (`easerve export --memory-only`); ValueError when the
    manifest does not describe the folder's files (export it again)."""
    manifest = current_manifest(model_dir)
    if manifest is None:
        raise ValueError(f"{model_dir}: no current manifest (the ONNX file or the checkpoint changed); export it")
    graphs = [model_dir / manifest.onnx.path, *(model_dir / variant.file.path for variant in manifest.quantized)]
    with _step(log, "peak working memory by input size (onnxruntime, a fresh process per graph)"):
        memory = measure_memory(graphs, manifest.inputs, manifest.preprocessing)
    updated = manifest.model_copy(update={"memory": memory})
    save_manifest(model_dir, updated)
    return updated


def _check_parity(context: _Context, fp32: Path) -> Parity:
    entry, info, thresholds = context.entry, context.info, context.options.thresholds
    graph = OrtModel(fp32, context.options.threads)
    batches = input_batches(entry, info, context.test.dataset, CHECK_BATCH)
    report = measure_parity(entry.task, graph.output_names, context.model, graph, batches)
    check_parity(report, thresholds, f"ONNX vs PyTorch on the {context.test.description}")
    graph_inputs, _ = graph_tensors(fp32)
    probe = random_inputs(entry, graph_inputs)
    shapes = {t.name: list(p.shape) for t, p in zip(graph_inputs, probe, strict=True)}
    random_report = measure_parity(entry.task, graph.output_names, context.model, graph, [probe])
    check_parity(random_report, thresholds, f"ONNX vs PyTorch on random inputs of shapes {shapes}")
    context.log(
        f"parity: max abs error {report.max_abs_error:.2e} (random inputs at other shapes: "
        f"{random_report.max_abs_error:.2e}), agreement {report.agreement:.4%} "
        f"({report.agreement_unit})"
    )
    return parity_record(report, context.test.description, random_report, shapes)


def _reduced_precision_variants(context: _Context, fp32: Path) -> tuple[list[Quantization], list[str]]:
    options = context.options
    if not (options.int8 or options.fp16):
        return [], []
    metric = primary_metric(context.entry, context.info)
    with _step(context.log, f"FP32 graph's {metric} on the {context.test.description}"):
        reference = _graph_metric(context, fp32, metric)
    builders = [(options.int8, "INT8", _int8_variant), (options.fp16, "FP16", _fp16_variant)]
    variants, refused = [], []
    for wanted, label, build in builders:
        if not wanted:
            continue
        try:
            if reference is None:
                raise PrecisionRefused(
                    f"{label} refused: no {metric} to check it by (generation is judged by the "
                    f"classifier checkpoint {DEFAULT_JUDGE.name} next to this model)"
                )
            with _step(context.log, f"{label} graph"):
                variants.append(build(context, fp32, metric, reference))
            context.log(_variant_summary(label, variants[-1]))
        except PrecisionRefused as refusal:
            context.log(str(refusal))
            refused.append(str(refusal))
    return variants, refused


def _variant_summary(label: str, variant: Quantization) -> str:
    speed = f", {variant.speedup_batch8:.2f}x FP32 speed at batch {SPEED_BATCH}" if variant.speedup_batch8 else ""
    return f"{label}: {variant.metric_name} {variant.metric_quantized:.4f} (FP32 {variant.metric_fp32:.4f}){speed}"


def _graph_metric(context: _Context, path: Path, metric: str) -> float | None:
    judge = context.model_dir.parent / DEFAULT_JUDGE.name
    metrics = evaluate_graph(path, context.entry, context.info, context.test.dataset, judge, context.options.threads)
    return metrics.get(metric)


def _int8_variant(context: _Context, fp32: Path, metric: str, reference: float) -> Quantization:
    int8 = context.staging / INT8_FILE
    calibration = open_split(context.info, "train", context.options.calibration_samples)
    input_names = [t.name for t in graph_tensors(fp32)[0]]
    batches = input_batches(context.entry, context.info, calibration.dataset, CALIBRATION_BATCH)
    quantize_int8(fp32, int8, calibration_feeds(input_names, ([t.numpy() for t in b] for b in batches)))
    value = _graph_metric(context, int8, metric)
    check_metric_drop(
        "INT8", metric, reference, float("nan") if value is None else value, context.options.max_drop_points
    )
    return Quantization(
        kind="int8-static",
        file=describe_file(context.staging, INT8_FILE),
        metric_name=metric,
        metric_fp32=reference,
        metric_quantized=value,
        speedup_batch8=_speedup(context, fp32, int8),
        measured_on=cpu_model(),
        max_drop_points=context.options.max_drop_points,
    )


def _fp16_variant(context: _Context, fp32: Path, metric: str, reference: float) -> Quantization:
    fp16 = context.staging / FP16_FILE
    kept = convert_to_fp16(fp32, fp16)
    value = _graph_metric(context, fp16, metric)
    check_metric_drop(
        "FP16", metric, reference, float("nan") if value is None else value, context.options.max_drop_points
    )
    # No speed-up: onnxruntime's CPU kernels run most FP16 ops in FP32; FP16 pays on GPUs.
    return Quantization(
        kind="fp16",
        file=describe_file(context.staging, FP16_FILE),
        metric_name=metric,
        metric_fp32=reference,
        metric_quantized=value,
        max_drop_points=context.options.max_drop_points,
        fp32_nodes=kept,
    )


def _speedup(context: _Context, fp32: Path, reduced: Path) -> float:
    """FP32 time over reduced-precision time, one held-out batch of SPEED_BATCH, same threads."""
    inputs = next(input_batches(context.entry, context.info, context.test.dataset, SPEED_BATCH))
    arrays = [t.numpy() for t in inputs]
    seconds = []
    for path in (fp32, reduced):
        graph = OrtModel(path, context.options.threads)
        seconds.append(time_calls(lambda graph=graph: graph.run(*arrays)).median)
    return seconds[0] / seconds[1]


def _publish(staging: Path, model_dir: Path, files: list[str], log: Log) -> None:
    """Move the staged files into the model folder; remove variants this export did not make."""
    for name in VARIANT_FILES:
        stale = model_dir / name
        if name not in files and stale.is_file():
            stale.unlink()
            log(f"removed {stale} (not produced by this export)")
    for name in files:
        shutil.move(staging / name, model_dir / name)
