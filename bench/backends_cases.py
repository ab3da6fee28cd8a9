"""Measuring one exported model on each backend: PyTorch eager (its checkpoint), onnxruntime FP32
(`model.onnx`) and onnxruntime INT8 (`model.int8.onnx`, when the export wrote one).

Every backend gets the same inputs: seeded random tensors at the manifest's shapes (the
preprocessed image size or point count), class labels in range for the generators.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from easerve.artifacts.accuracy_gate import drop_in_points
from easerve.artifacts.manifest import Manifest, load_manifest
from easerve.artifacts.shapes import concrete_shape
from easerve.export.latency import Timing, time_calls
from easerve.export.ort_model import OrtModel
from easerve.training.checkpoint import load_checkpoint

BACKENDS = {"eager": "PyTorch eager", "fp32": "ORT FP32", "int8": "ORT INT8"}
LATENCY_BATCH = 1
THROUGHPUT_BATCHES = (8, 32)
# Per batch size the backends take turns in this many rounds, so that a change in the machine's
# load reaches them alike (see docs/benchmarks.md#run-to-run-spread).
ROUNDS = 5

Call = Callable[[list[np.ndarray]], object]


@dataclass(frozen=True)
class BackendFigures:
    """Seconds per call at batch 1, and samples per second at each throughput batch."""

    latency: Timing
    throughput: dict[int, float]


@dataclass
class ModelFigures:
    """One model's figures per backend key (no "int8" when the export wrote no INT8 graph)."""

    name: str
    backends: dict[str, BackendFigures] = field(default_factory=dict)
    # Points the INT8 graph's task metric lost against FP32 at export (None: no INT8 graph).
    int8_drop_points: float | None = None


def bench_inputs(manifest: Manifest, batch: int, seed: int = 0) -> list[np.ndarray]:
    """Inputs for every graph input at `batch`: standard normal floats, integer inputs (class
    labels) drawn from the manifest's labels."""
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in manifest.inputs:
        shape = concrete_shape(tensor, manifest.preprocessing, batch)
        if tensor.dtype == "int64":
            arrays.append(rng.integers(0, len(manifest.labels), shape, dtype=np.int64))
        else:
            arrays.append(rng.standard_normal(shape, dtype=np.float32))
    return arrays


def _eager_call(model_dir: Path) -> Call:
    model, _ = load_checkpoint(model_dir)

    def call(arrays: list[np.ndarray]) -> object:
        with torch.inference_mode():
            return model(*(torch.from_numpy(a) for a in arrays))

    return call


def _ort_call(path: Path, threads: int) -> Call:
    graph = OrtModel(path, threads or None)
    return lambda arrays: graph.run(*arrays)


def backend_calls(model_dir: Path, manifest: Manifest, threads: int) -> dict[str, Call]:
    """A call per backend available for the model in `model_dir` (PyTorch with `threads` intra-op
    threads is set by the caller, process-wide)."""
    calls = {"eager": _eager_call(model_dir), "fp32": _ort_call(model_dir / manifest.onnx.path, threads)}
    for variant in manifest.quantized:
        if variant.kind == "int8-static":
            calls["int8"] = _ort_call(model_dir / variant.file.path, threads)
    return calls


def _interleaved_timings(calls: dict[str, Call], manifest: Manifest, batch: int, budget_s: float) -> dict[str, Timing]:
    """Every backend's call times at `batch`: the backends take turns for ROUNDS rounds, each
    round spending `budget_s / ROUNDS` per backend."""
    arrays = bench_inputs(manifest, batch)
    seconds: dict[str, list[float]] = {key: [] for key in calls}
    for _ in range(ROUNDS):
        for key, call in calls.items():
            timing = time_calls(functools.partial(call, arrays), warmup=1, min_repeats=1, budget_s=budget_s / ROUNDS)
            seconds[key].extend(timing.seconds)
    return {key: Timing(tuple(values)) for key, values in seconds.items()}


def measure_model(model_dir: Path, threads: int, budget_s: float, log: Callable[[str], None]) -> ModelFigures:
    """Every available backend of the exported model in `model_dir`."""
    manifest = load_manifest(model_dir)
    figures = ModelFigures(manifest.name)
    calls = backend_calls(model_dir, manifest, threads)
    log(f"{manifest.name}: {', '.join(BACKENDS[key] for key in calls)}, taking turns")
    timings = {
        batch: _interleaved_timings(calls, manifest, batch, budget_s) for batch in (LATENCY_BATCH, *THROUGHPUT_BATCHES)
    }
    for key in calls:
        figures.backends[key] = BackendFigures(
            latency=timings[LATENCY_BATCH][key],
            throughput={b: b / timings[b][key].median for b in THROUGHPUT_BATCHES},
        )
    int8 = [q for q in manifest.quantized if q.kind == "int8-static"]
    if int8:
        figures.int8_drop_points = drop_in_points(int8[0].metric_fp32, int8[0].metric_quantized)
    return figures
