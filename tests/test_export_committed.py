"""The committed `weights/<model>/model.onnx` files still match their checkpoints.

Compared by behaviour, not by file hash: the exporter's bytes change with torch / onnxscript /
onnxruntime versions while the computation does not. A fresh export is checked for parity
against the PyTorch model of its checkpoint, so "the committed graph computes what the
checkpoint's PyTorch model computes (held-out and random inputs, the export's parity bounds)"
is what "matches a fresh export" means, and it takes a second per model instead of the ~20 s of
an export. It fails when a checkpoint is retrained, or the model code changes, without a
re-export. The literal fresh-export comparison runs under `pytest -m slow`.
"""

import tempfile
from pathlib import Path

import pytest

from artifacts.manifest import discover_manifests, load_manifest, sha256_file
from export.held_out import input_batches, open_split
from export.onnx_graph import export_onnx, graph_tensors, signature_of
from export.ort_model import OrtModel
from export.parity import ParityThresholds, check_parity, measure_parity, random_inputs
from model_defs.registry import get_model_entry
from training.checkpoint import load_checkpoint

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
SAMPLES = 16
COMMITTED = [
    pytest.param(folder, id=folder.name)
    for folder in discover_manifests(WEIGHTS)
    if (folder / "model.onnx").is_file() and (folder / "checkpoint.json").is_file()
] or [pytest.param(None, marks=pytest.mark.skip(reason="no exported model committed under weights/ yet"))]


def _held_out_and_random_batches(folder: Path, graph_path: Path) -> list:
    _, info = load_checkpoint(folder)
    entry = get_model_entry(info.model)
    test = open_split(info, "test", SAMPLES)
    batches = list(input_batches(entry, info, test.dataset, SAMPLES))
    return [*batches, random_inputs(entry, graph_tensors(graph_path)[0])]


@pytest.mark.parametrize("folder", COMMITTED)
def test_committed_manifest_hashes_match_the_files(folder):
    manifest = load_manifest(folder)
    assert sha256_file(folder / manifest.onnx.path) == manifest.onnx.sha256
    assert sha256_file(folder / manifest.source_checkpoint.path) == manifest.source_checkpoint.sha256, (
        f"{folder.name}: the checkpoint changed since export; run `easerve export {folder.name}`"
    )
    for variant in manifest.quantized:
        assert sha256_file(folder / variant.file.path) == variant.file.sha256


@pytest.mark.parametrize("folder", COMMITTED)
def test_committed_onnx_computes_what_its_checkpoint_computes(folder):
    model, info = load_checkpoint(folder)
    graph = OrtModel(folder / "model.onnx", threads=1)
    batches = _held_out_and_random_batches(folder, folder / "model.onnx")
    report = measure_parity(info.task, graph.output_names, model, graph, batches)
    check_parity(report, ParityThresholds(), f"{folder.name}: committed model.onnx vs its checkpoint")


@pytest.mark.slow
@pytest.mark.parametrize("folder", COMMITTED)
def test_committed_onnx_matches_a_fresh_export(folder, request):
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("re-exports the model (~20 s); run with `pytest -m slow`")
    model, info = load_checkpoint(folder)
    entry = get_model_entry(info.model)
    committed = OrtModel(folder / "model.onnx", threads=1)
    with tempfile.TemporaryDirectory() as scratch:
        fresh_path = Path(scratch) / "model.onnx"
        export_onnx(model, entry.example_inputs(2), signature_of(entry), fresh_path)
        fresh = OrtModel(fresh_path, threads=1)
        assert graph_tensors(fresh_path) == graph_tensors(folder / "model.onnx")
        report = measure_parity(info.task, committed.output_names, committed, fresh,
                                _held_out_and_random_batches(folder, fresh_path))
    check_parity(report, ParityThresholds(), f"{folder.name}: committed vs fresh export")
