"""The committed `weights/<model>/model.onnx` of every bundled model still matches its checkpoint.

A fresh export is compared by behaviour, not by file hash: the exporter's bytes change with
torch / onnxscript / onnxruntime versions while the computation does not. By default the
committed graph is held to the export's own parity bounds against the PyTorch model of its
checkpoint (held-out and random inputs; a fresh export passes the same check when it is
written, so the two agree) and to the signature a fresh export has: ~1 s per model instead of
the ~20 s of an export. It fails when a checkpoint is retrained, or the model code changes,
without a re-export. The literal fresh-export comparison runs under `pytest -m slow`.
A bundled model whose ONNX file is not committed yet is skipped, with the command that makes it.
"""

import tempfile
from pathlib import Path

import pytest

from easerve.artifacts.manifest import load_manifest, sha256_file
from easerve.export.held_out import input_batches
from easerve.export.manifest_writer import tensor_info
from easerve.export.onnx_graph import export_onnx, graph_tensors, signature_of
from easerve.export.ort_model import OrtModel
from easerve.export.parity import ParityThresholds, check_parity, measure_parity, random_inputs
from easerve.export.pipeline import EXAMPLE_BATCH, ONNX_FILE
from easerve.model_defs.registry import get_model_entry, list_models
from easerve.training.checkpoint import load_checkpoint
from easerve.training.held_out import open_split

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
SAMPLES = 16
BUNDLED = [entry.name for entry in list_models(bundled=True)]
SLOW = pytest.mark.skipif(
    "'slow' not in config.getoption('markexpr')", reason="re-exports the model (~20 s each); run with `pytest -m slow`"
)


def _committed(name: str) -> Path:
    """The bundled model's folder; skips the test when its export is not committed yet."""
    folder = WEIGHTS / name
    missing = [f for f in (ONNX_FILE, "manifest.json", "checkpoint.json") if not (folder / f).is_file()]
    if missing:
        pytest.skip(f"weights/{name}/{missing[0]} is not committed yet (train the model, then `easerve export {name}`)")
    return folder


def _held_out_and_random_batches(folder: Path, graph_path: Path) -> list:
    _, info = load_checkpoint(folder)
    entry = get_model_entry(info.model)
    test = open_split(info, "test", SAMPLES)
    batches = list(input_batches(entry, info, test.dataset, SAMPLES))
    return [*batches, random_inputs(entry, graph_tensors(graph_path)[0])]


@pytest.mark.parametrize("name", BUNDLED)
def test_committed_manifest_hashes_and_tensors_match_the_files(name):
    folder = _committed(name)
    manifest = load_manifest(folder)
    assert sha256_file(folder / manifest.onnx.path) == manifest.onnx.sha256
    assert sha256_file(folder / manifest.source_checkpoint.path) == manifest.source_checkpoint.sha256, (
        f"{name}: the checkpoint changed since export; run `easerve export {name}`"
    )
    for variant in manifest.quantized:
        assert sha256_file(folder / variant.file.path) == variant.file.sha256
    inputs, outputs = graph_tensors(folder / manifest.onnx.path)
    assert ([tensor_info(t) for t in inputs], [tensor_info(t) for t in outputs]) == (manifest.inputs, manifest.outputs)


@pytest.mark.parametrize("name", BUNDLED)
def test_committed_onnx_has_the_signature_a_fresh_export_has(name):
    folder = _committed(name)
    signature = signature_of(get_model_entry(name))
    inputs, outputs = graph_tensors(folder / ONNX_FILE)
    assert tuple(t.name for t in inputs) == signature.input_names
    assert tuple(t.name for t in outputs) == signature.output_names
    for tensor in (*inputs, *outputs):
        symbolic = {axis: dim for axis, dim in enumerate(tensor.shape) if isinstance(dim, str)}
        assert symbolic == signature.dynamic_axes.get(tensor.name, {}), tensor.name


# How much more error than the export recorded a committed graph may show on another CPU.
OTHER_CPU_ERROR_FACTOR = 4.0


@pytest.mark.parametrize("name", BUNDLED)
def test_committed_onnx_computes_what_its_checkpoint_computes(name):
    folder = _committed(name)
    model, info = load_checkpoint(folder)
    graph = OrtModel(folder / ONNX_FILE, threads=1)
    batches = _held_out_and_random_batches(folder, folder / ONNX_FILE)
    report = measure_parity(info.task, graph.output_names, model, graph, batches)
    # An export accepted with a looser --max-abs-error recorded what it measured on the exporting
    # machine's CPU; other CPUs run other kernels, so such a graph gets that much more room and a
    # wrong graph is still off by far more (figures: docs/export.md#onnx-and-parity).
    recorded = load_manifest(folder).parity.random_inputs_max_abs_error or 0.0
    thresholds = ParityThresholds(max_abs_error=max(ParityThresholds.max_abs_error, OTHER_CPU_ERROR_FACTOR * recorded))
    check_parity(report, thresholds, f"{name}: committed model.onnx vs its checkpoint")


@pytest.mark.slow
@SLOW
@pytest.mark.parametrize("name", BUNDLED)
def test_committed_onnx_matches_a_fresh_export(name):
    folder = _committed(name)
    model, info = load_checkpoint(folder)
    entry = get_model_entry(info.model)
    committed = OrtModel(folder / ONNX_FILE, threads=1)
    with tempfile.TemporaryDirectory() as scratch:
        fresh_path = Path(scratch) / ONNX_FILE
        export_onnx(model, entry.example_inputs(EXAMPLE_BATCH), signature_of(entry), fresh_path)
        fresh = OrtModel(fresh_path, threads=1)
        assert graph_tensors(fresh_path) == graph_tensors(folder / ONNX_FILE)
        report = measure_parity(
            info.task, committed.output_names, committed, fresh, _held_out_and_random_batches(folder, fresh_path)
        )
    check_parity(report, ParityThresholds(), f"{name}: committed vs fresh export")


def test_bundled_weights_stay_under_60_mb():
    from easerve.training.checkpoint import TRAIN_STATE_FILE

    # The train state (exact FP32 weights + optimizer) is not committed.
    files = [p for p in WEIGHTS.rglob("*") if p.is_file() and p.name != TRAIN_STATE_FILE]
    assert files
    total = sum(p.stat().st_size for p in files)
    assert total < 60_000_000, f"weights/ holds {total / 1e6:.1f} MB"
