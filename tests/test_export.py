"""Export of a checkpoint: the ONNX graph, parity, INT8 / FP16 variants, manifest, Triton entry,
TensorRT cache keys. One real export (a fresh PCT classifier checkpoint: the smallest graph with
EA and a dynamic non-batch axis) is shared by most tests."""

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from easerve.artifacts.accuracy_gate import PrecisionRefused, check_metric_drop, drop_in_points
from easerve.artifacts.manifest import (
    Manifest,
    Preprocessing,
    TensorInfo,
    load_manifest,
    sha256_file,
)
from easerve.artifacts.tensorrt import (
    ShapeRange,
    engine_key,
    engine_profile,
    tensorrt_unavailable_reason,
)
from easerve.artifacts.triton import config_pbtxt, model_configuration
from easerve.cli import main
from easerve.export.comparisons.detections import compare_detections
from easerve.export.held_out import input_batches
from easerve.export.onnx_graph import STANDARD_DOMAINS
from easerve.export.ort_model import OrtModel
from easerve.export.parity import ParityError, ParityThresholds, check_parity, compare_outputs, measure_parity
from easerve.export.pipeline import ExportOptions, current_manifest, export_checkpoint
from easerve.export.quantize import weighted_nodes
from easerve.export.triton import write_triton_model
from easerve.model_defs.labels import PRIMITIVE_CLASSES
from easerve.model_defs.registry import get_model_entry, list_models
from easerve.training import checkpoint
from easerve.training.datasets import open_dataset
from easerve.training.held_out import open_split
from easerve.training.tasks import task_for

CLASSIFIER = "pct-ea-tiny"
POINTS = 256
SLOW = pytest.mark.skipif(
    "'slow' not in config.getoption('markexpr')", reason="exports a model (~20 s each); run with `pytest -m slow`"
)


def fresh_checkpoint(weights_dir: Path, name: str, **data_size: int) -> Path:
    """An untrained checkpoint of `name`, written as the trainer writes one (no training: fast)."""
    entry = get_model_entry(name)
    torch.manual_seed(0)
    model = entry.create().eval()
    source = "primitives-3d" if entry.task.startswith("pointcloud") else "shapes-2d"
    sample = open_dataset(source, entry.task, "test", num_samples=1, **data_size)
    task = task_for(entry, list(sample.class_names), {})
    info = checkpoint.CheckpointInfo(
        model=name,
        task=entry.task,
        attention=entry.attention,
        config=dataclasses.asdict(model.config),
        class_names=list(sample.class_names),
        preprocessing=task.preprocessing(sample[0][0]),
        metrics={"accuracy": 0.0},
        dataset=source,
        seed=0,
        steps=0,
        batch_size=1,
        learning_rate=0.0,
        training_seconds=0.0,
        code_version="test",
        torch_version=torch.__version__,
    )
    checkpoint.save_checkpoint(weights_dir / name, model, info)
    return weights_dir / name


@pytest.mark.slow
@SLOW
@pytest.mark.parametrize("name", [entry.name for entry in list_models(bundled=True)])
def test_every_bundled_model_exports_with_parity_and_both_variants(name, tmp_path):
    model_dir = fresh_checkpoint(tmp_path, name)
    options = ExportOptions(
        int8=True, fp16=True, parity_samples=16, calibration_samples=16, max_drop_points=100.0, threads=1
    )
    result = export_checkpoint(model_dir, options, log=lambda message: None)
    manifest = load_manifest(model_dir)
    assert manifest.parity.max_abs_error <= 1e-4 and manifest.parity.task_agreement >= 0.999
    if manifest.task == "generation":  # judged by a classifier checkpoint this folder lacks
        assert [r.split(":")[0] for r in result.refused] == ["INT8 refused", "FP16 refused"]
    else:
        assert result.refused == [] and {q.kind for q in manifest.quantized} == {"int8-static", "fp16"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A fresh PCT checkpoint exported with INT8 and FP16 variants; its model folder."""
    model_dir = fresh_checkpoint(tmp_path_factory.mktemp("weights"), CLASSIFIER, num_points=POINTS)
    options = ExportOptions(
        int8=True, fp16=True, parity_samples=32, calibration_samples=16, max_drop_points=100.0, threads=1
    )
    result = export_checkpoint(model_dir, options, log=lambda message: None)
    assert result.refused == []
    return model_dir


def test_manifest_describes_the_exported_files(exported):
    manifest = load_manifest(exported)
    assert manifest.name == CLASSIFIER and manifest.task == "pointcloud-classification"
    assert manifest.attention == "ea" and manifest.arch == "pct" and manifest.opset >= 17
    assert manifest.inputs == [TensorInfo(name="points", dtype="float32", shape=["batch", "points", 3])]
    assert manifest.outputs == [TensorInfo(name="logits", dtype="float32", shape=["batch", len(PRIMITIVE_CLASSES)])]
    assert manifest.labels == list(PRIMITIVE_CLASSES)
    assert manifest.preprocessing.kind == "points" and manifest.preprocessing.num_points == POINTS
    assert manifest.max_batch_size == 32
    assert manifest.onnx.sha256 == sha256_file(exported / "model.onnx")
    assert manifest.source_checkpoint.sha256 == sha256_file(exported / "model.safetensors")
    assert {"torch", "onnx", "onnxruntime", "onnxscript", "easerve"} <= set(manifest.exporter_versions)
    assert manifest.metrics == {"accuracy": 0.0}
    for variant in manifest.quantized:
        assert variant.file.sha256 == sha256_file(exported / variant.file.path)
        assert variant.metric_name == "accuracy"
    assert {q.kind for q in manifest.quantized} == {"int8-static", "fp16"}
    assert current_manifest(exported) == manifest


def test_parity_figures_are_recorded_within_the_bounds(exported):
    parity = load_manifest(exported).parity
    assert parity.samples == 32 and "test split" in parity.dataset
    assert parity.max_abs_error <= 1e-4 and parity.random_inputs_max_abs_error <= 1e-4
    assert parity.task_agreement >= 0.999 and parity.metric == "same top-1 class per sample"
    assert parity.random_input_shapes == {"points": [3, 512, 3]}


def test_exported_graph_is_portable_and_batches_dynamically(exported):
    graph = onnx.load(str(exported / "model.onnx"))
    assert {node.domain for node in graph.graph.node} <= STANDARD_DOMAINS
    assert {opset.domain for opset in graph.opset_import} <= STANDARD_DOMAINS
    session = OrtModel(exported / "model.onnx", threads=1)
    for batch, points in ((1, 100), (5, 2048)):
        (logits,) = session.run(np.zeros((batch, points, 3), np.float32))
        assert logits.shape == (batch, len(PRIMITIVE_CLASSES))


def test_int8_graph_is_quantised_and_fp16_graph_keeps_the_normalisation_in_fp32(exported):
    int8 = onnx.load(str(exported / "model.int8.onnx"))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in int8.graph.node}
    fp16_variant = next(q for q in load_manifest(exported).quantized if q.kind == "fp16")
    fp16 = onnx.load(str(exported / "model.fp16.onnx"))
    kept = {n.op_type for n in fp16.graph.node if n.name in fp16_variant.fp32_nodes}
    assert kept == {"Softmax", "ReduceSum", "Add", "Div"}
    inputs = np.random.default_rng(0).standard_normal((2, POINTS, 3)).astype(np.float32)
    (reference,) = OrtModel(exported / "model.onnx", threads=1).run(inputs)
    (half,) = OrtModel(exported / "model.fp16.onnx", threads=1).run(inputs)
    assert half.dtype == np.float32 and np.abs(half - reference).max() < 1e-2


def test_int8_quantises_only_the_ops_that_hold_weights():
    """Activation-by-activation MatMuls (self-attention's Q·Kᵀ, softmax·V) stay in float."""
    weight = onnx.numpy_helper.from_array(np.ones((4, 4), np.float32), "weight")
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("MatMul", ["x", "weight"], ["projected"], name="projection"),
            onnx.helper.make_node("MatMul", ["projected", "x"], ["scores"], name="scores"),
            onnx.helper.make_node("Softmax", ["scores"], ["y"], name="softmax"),
        ],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 4])],
        [weight],
    )
    assert weighted_nodes(onnx.helper.make_model(graph)) == ["projection"]


def test_parity_check_names_the_output_that_differs(exported, tmp_path):
    graph = onnx.load(str(exported / "model.onnx"))
    bias = next(i for i in graph.graph.initializer if i.dims == [len(PRIMITIVE_CLASSES)])
    perturbed = onnx.numpy_helper.to_array(bias) + np.float32(0.01)
    bias.CopyFrom(onnx.numpy_helper.from_array(perturbed, bias.name))
    onnx.save(graph, str(tmp_path / "perturbed.onnx"))
    model, info = checkpoint.load_checkpoint(exported)
    entry = get_model_entry(CLASSIFIER)
    test = open_split(info, "test", 8)
    report = measure_parity(
        entry.task,
        ["logits"],
        model,
        OrtModel(tmp_path / "perturbed.onnx", 1),
        input_batches(entry, info, test.dataset, 8),
    )
    assert report.max_abs_error == pytest.approx(0.01, rel=1e-2)
    with pytest.raises(ParityError, match=r"output 'logits' differs by up to 0\.01"):
        check_parity(report, ParityThresholds(), "perturbed")


def test_failed_parity_exits_nonzero_and_writes_nothing(tmp_path, capsys):
    model_dir = fresh_checkpoint(tmp_path, CLASSIFIER, num_points=POINTS)
    code = main(
        [
            "export",
            CLASSIFIER,
            "--weights-dir",
            str(tmp_path),
            "--parity-samples",
            "4",
            "--max-abs-error",
            "0",
            "--threads",
            "1",
        ]
    )
    output = capsys.readouterr().out
    assert code == 1
    assert "output 'logits' differs by up to" in output and "nothing was written" in output
    assert sorted(p.name for p in model_dir.iterdir()) == ["checkpoint.json", "model.safetensors"]


def test_detections_match_across_slot_order_but_not_across_moved_boxes():
    boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 0, 0]]], np.float32)
    scores = np.array([[0.9, 0.8, 0.0]], np.float32)
    labels = np.array([[1, 2, 0]], np.int64)
    names = ("boxes", "scores", "labels")
    swapped = (boxes[:, [1, 0, 2]], scores[:, [1, 0, 2]], labels[:, [1, 0, 2]])
    same = compare_detections(names, (boxes, scores, labels), swapped)
    assert (same.agreeing, same.compared) == (2, 2) and same.max_abs_error["boxes"] == 0
    moved = boxes.copy()
    moved[0, 1] += 3
    differ = compare_detections(names, (boxes, scores, labels), (moved, scores, labels))
    assert (differ.agreeing, differ.compared) == (1, 2)


def test_instances_agree_when_their_detections_match_and_masks_barely_differ():
    boxes = np.array([[[2.0, 2, 10, 10], [0, 0, 1, 1]]], np.float32)
    scores, labels = np.array([[0.9, 0.01]], np.float32), np.array([[1, 0]], np.int64)
    masks = np.zeros((1, 2, 16, 16), np.float32)
    masks[0, 0, 2:10, 2:10] = 0.8
    names = ["boxes", "scores", "labels", "masks"]
    reference = [boxes, scores, labels, masks]
    # The same, slots swapped, and one window column more (a box edge moved by float noise).
    moved = masks[:, ::-1].copy()
    moved[0, 1, 2:10, 10] = 0.1
    same = compare_outputs(
        "instance-segmentation", names, reference, [boxes[:, ::-1], scores[:, ::-1], labels[:, ::-1], moved]
    )
    assert (same.agreeing, same.compared) == (1, 1) and same.max_abs_error["masks"] == 0.0
    # A mask that lost a row of the object: the detection matches, the instance does not.
    cut = masks.copy()
    cut[0, 0, 9, 2:10] = 0.2
    different = compare_outputs("instance-segmentation", names, reference, [boxes, scores, labels, cut])
    assert (different.agreeing, different.compared) == (0, 1) and different.max_abs_error["masks"] == pytest.approx(0.6)


def test_a_full_top_k_may_swap_its_lowest_detection_for_another():
    names = ("boxes", "scores", "labels")
    boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]], np.float32)
    labels = np.array([[1, 2, 3]], np.int64)
    other_peak = boxes.copy()
    other_peak[0, 2] = [60, 60, 70, 70]
    full = np.array([[0.9, 0.5, 0.3]], np.float32)
    swapped = compare_detections(names, (boxes, full, labels), (other_peak, full + 1e-5, labels))
    assert (swapped.agreeing, swapped.compared) == (2, 2)
    # With a background slot the top-K is not full: every detection above the floor counts.
    boxes, labels, other_peak = (np.concatenate([a, a[:, :1] * 0], axis=1) for a in (boxes, labels, other_peak))
    room = np.array([[0.9, 0.5, 0.3, 0.0]], np.float32)
    missing = compare_detections(names, (boxes, room, labels), (other_peak, room, labels))
    assert (missing.agreeing, missing.compared) == (2, 3)


def test_metric_guard_refuses_a_drop_over_the_limit():
    assert drop_in_points(0.90, 0.885) == pytest.approx(1.5)
    check_metric_drop("INT8", "accuracy", 0.90, 0.885, 2.0)
    check_metric_drop("INT8", "accuracy", 0.90, 0.95, 2.0)
    with pytest.raises(PrecisionRefused, match=r"INT8 refused: accuracy 0\.8700 .* 3\.00 points .* 2 allowed"):
        check_metric_drop("INT8", "accuracy", 0.90, 0.87, 2.0)
    with pytest.raises(PrecisionRefused):
        check_metric_drop("FP16", "miou", 0.5, float("nan"), 2.0)


def test_refused_variant_is_not_written(exported, tmp_path):
    """A refused INT8 graph leaves the folder without one, and an older one is removed."""
    model_dir = tmp_path / CLASSIFIER
    shutil.copytree(exported, model_dir)
    result = export_checkpoint(
        model_dir,
        ExportOptions(int8=True, parity_samples=8, calibration_samples=8, max_drop_points=-101.0, threads=1),
        log=lambda message: None,
    )
    assert len(result.refused) == 1 and result.refused[0].startswith("INT8 refused: accuracy")
    assert not (model_dir / "model.int8.onnx").exists() and not (model_dir / "model.fp16.onnx").exists()
    assert load_manifest(model_dir).quantized == []


def test_triton_entry_holds_the_config_and_the_same_onnx(exported, tmp_path):
    manifest = load_manifest(exported)
    folder = write_triton_model(tmp_path / "repo", manifest, exported / "model.onnx")
    config = (folder / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "max_batch_size: 32" in config
    assert "dims: [ -1, 3 ]" in config and "dims: [ 6 ]" in config
    assert "dynamic_batching { }" in config and "instance_group [\n  {\n    count: 1\n    kind: KIND_AUTO" in config
    assert sha256_file(folder / "1" / "model.onnx") == manifest.onnx.sha256


def _segmenter_manifest(onnx_sha256: str = "0" * 64) -> Manifest:
    return Manifest(
        name="eanet-ea-tiny",
        task="segmentation",
        attention="ea",
        arch="eanet",
        inputs=[TensorInfo(name="image", dtype="float32", shape=["batch", 3, "height", "width"])],
        outputs=[TensorInfo(name="logits", dtype="float32", shape=["batch", 7, "height", "width"])],
        preprocessing=Preprocessing(kind="image", image_size=(128, 96)),
        labels=["a"] * 7,
        max_batch_size=16,
        onnx={"path": "model.onnx", "sha256": onnx_sha256, "bytes": 1},
        opset=18,
    )


def test_triton_dims_leave_out_the_batch_and_mark_symbolic_dims():
    config = config_pbtxt(model_configuration(_segmenter_manifest(), instances=2))
    assert config.count("dims: [ 3, -1, -1 ]") == 1 and config.count("dims: [ 7, -1, -1 ]") == 1
    assert "count: 2" in config


def test_engine_profile_spans_batch_one_to_max_at_the_preprocessed_size():
    assert engine_profile(_segmenter_manifest()) == {
        "image": ShapeRange((1, 3, 128, 96), (16, 3, 128, 96), (16, 3, 128, 96))
    }


def test_engine_cache_key_depends_on_content_not_on_path(exported, tmp_path):
    profile = engine_profile(load_manifest(exported))
    copy = tmp_path / "elsewhere" / "renamed.onnx"
    copy.parent.mkdir()
    shutil.copyfile(exported / "model.onnx", copy)
    key = engine_key(exported / "model.onnx", "10.9.0", "9.0", "fp16", profile)
    assert engine_key(copy, "10.9.0", "9.0", "fp16", profile).digest() == key.digest()
    variants = [
        engine_key(copy, "11.0.0", "9.0", "fp16", profile),
        engine_key(copy, "10.9.0", "8.9", "fp16", profile),
        engine_key(copy, "10.9.0", "9.0", "fp32", profile),
        engine_key(copy, "10.9.0", "9.0", "fp16", engine_profile(_segmenter_manifest())),
        engine_key(exported / "model.int8.onnx", "10.9.0", "9.0", "fp16", profile),
    ]
    assert len({key.digest(), *(v.digest() for v in variants)}) == 6


@pytest.mark.skipif(tensorrt_unavailable_reason() is None, reason="TensorRT is installed here")
def test_trt_format_without_tensorrt_says_so_and_exits_3(exported, capsys):
    code = main(["export", CLASSIFIER, "--weights-dir", str(exported.parent), "--format", "trt"])
    assert code == 3
    assert "TensorRT is not installed here" in capsys.readouterr().out


def test_trt_engine_builds_from_the_exported_graph(exported, tmp_path):
    reason = tensorrt_unavailable_reason()
    if reason:
        pytest.skip(reason)
    code = main(
        [
            "export",
            CLASSIFIER,
            "--weights-dir",
            str(exported.parent),
            "--format",
            "trt",
            "--engine-cache",
            str(tmp_path),
        ]
    )
    assert code == 0 and len(list(tmp_path.glob("tensorrt/*.plan"))) == 1


def test_bench_backends_measures_every_backend_and_writes_the_report(exported, tmp_path, capsys):
    code = main(
        [
            "bench",
            "backends",
            "--weights-dir",
            str(exported.parent),
            "--models",
            CLASSIFIER,
            "--time-budget",
            "0.01",
            "--out",
            str(tmp_path),
        ]
    )
    output = capsys.readouterr().out
    assert code == 0
    page = (tmp_path / "bench_backends.md").read_text()
    for backend in ("PyTorch eager", "ORT FP32", "ORT INT8"):
        assert f"| {CLASSIFIER} | {backend} |" in page
    assert "onnxruntime FP32 / PyTorch eager throughput at batch 8" in output
    assert (tmp_path / "bench_backends.png").stat().st_size > 0


def test_bench_backends_serves_every_kept_variant_beside_the_offline_figures(exported, tmp_path, capsys):
    code = main(
        [
            "bench",
            "backends",
            "--weights-dir",
            str(exported.parent),
            "--models",
            CLASSIFIER,
            "--time-budget",
            "0.01",
            "--served",
            "--served-clients",
            "2",
            "--served-seconds",
            "0.5",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    page = (tmp_path / "bench_backends.md").read_text()
    assert "Served path" in page
    for variant in ("fp32", "int8"):
        row = next(line for line in page.splitlines() if line.startswith(f"| {CLASSIFIER} | {variant} |"))
        requests_per_s = float(row.split("|")[3].replace(",", ""))
        assert requests_per_s > 0 and row.split("|")[-2].strip() == "0"  # answered, none failed
