"""Tiny hand-built ONNX models for every task, with manifests, so the service is tested without
the trained weights. Each graph computes something simple enough that the tests can predict its
answers from the input:

- classification: logits = 4 * (mean R, mean G, mean B, 0, 0, 0) -> a red image is class 0.
- segmentation: a 1x1 conv; class 0 (background) scores 0.5, classes 1/2/3 score the pixel's
  R/G/B -> a red square on black is class 1 inside, background outside.
- detection: four fixed boxes in model pixels, scores = base score x the image's mean intensity.
- instance segmentation: the detection graph, each box's mask 0.9 inside the box, 0 outside.
- generation: image = tanh(tanh(z[:3]) + 0.1 label), broadcast to 8x8.
- point cloud classification: logits = 5 * (max x, max y, max z, 0, 0, 0) of the normalised cloud.
- point cloud segmentation: part logits = (x, y, z, 0, ...) per point.

Every model exists twice, `-ea-` and `-sa-` (the same graph), to test the attention selector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from easerve.artifacts.manifest import Manifest, Preprocessing, TensorInfo, describe_file, save_manifest

OPSET = 17
MAX_BATCH = 8
SHAPES = ["circle", "square", "triangle", "star", "ellipse", "hexagon"]
SEG_CLASSES = ["background", *SHAPES]
PRIMITIVES = ["sphere", "cube", "cylinder", "cone", "torus", "pyramid"]
PARTS = [
    "sphere/surface",
    "cube/top",
    "cube/bottom",
    "cube/side",
    "cylinder/top",
    "cylinder/bottom",
    "cylinder/side",
    "cone/base",
    "cone/side",
    "torus/outer",
    "torus/inner",
    "pyramid/base",
    "pyramid/side",
]
DETECTION_BOXES = np.array([[4, 4, 12, 12], [16, 8, 28, 20], [0, 0, 32, 32], [2, 2, 6, 6]], np.float32)
DETECTION_SCORES = np.array([0.9, 0.6, 0.2, 0.05], np.float32)
DETECTION_LABELS = np.array([0, 1, 2, 3], np.int64)
CLASSIFY_SIZE = (16, 16)
SEGMENT_SIZE = (32, 32)
DETECT_SIZE = (32, 32)
Z_DIM = 8
NUM_POINTS = 64


def _value(name: str, dtype: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def classification_graph() -> onnx.GraphProto:
    weights = np.zeros((3, 6), np.float32)
    weights[[0, 1, 2], [0, 1, 2]] = 4.0
    return helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["means"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["means", "w"], ["logits"]),
        ],
        "classifier",
        [_value("image", TensorProto.FLOAT, ["batch", 3, *CLASSIFY_SIZE])],
        [_value("logits", TensorProto.FLOAT, ["batch", 6])],
        [_const("w", weights)],
    )


def segmentation_graph() -> onnx.GraphProto:
    weights = np.zeros((7, 3, 1, 1), np.float32)
    weights[[1, 2, 3], [0, 1, 2], 0, 0] = 1.0
    bias = np.full(7, -1.0, np.float32)
    bias[0], bias[1:4] = 0.5, 0.0
    return helper.make_graph(
        [helper.make_node("Conv", ["image", "w", "b"], ["logits"])],
        "segmenter",
        [_value("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [_value("logits", TensorProto.FLOAT, ["batch", 7, "height", "width"])],
        [_const("w", weights), _const("b", bias)],
    )


def detection_graph() -> onnx.GraphProto:
    k = len(DETECTION_SCORES)
    return helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["mean4d"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Reshape", ["mean4d", "shape_b1"], ["mean"]),  # (b, 1)
            helper.make_node("Mul", ["mean", "base_scores"], ["scores"]),
            helper.make_node("Mul", ["mean", "zero"], ["zeros"]),
            helper.make_node("Unsqueeze", ["zeros", "axis2"], ["zeros3"]),  # (b, 1, 1)
            helper.make_node("Add", ["zeros3", "base_boxes"], ["boxes"]),
            helper.make_node("Cast", ["zeros"], ["zeros_int"], to=TensorProto.INT64),
            helper.make_node("Add", ["zeros_int", "base_labels"], ["labels"]),
        ],
        "detector",
        [_value("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [
            _value("boxes", TensorProto.FLOAT, ["batch", k, 4]),
            _value("scores", TensorProto.FLOAT, ["batch", k]),
            _value("labels", TensorProto.INT64, ["batch", k]),
        ],
        [
            _const("shape_b1", np.array([-1, 1], np.int64)),
            _const("base_scores", DETECTION_SCORES[None]),
            _const("zero", np.zeros(1, np.float32)),
            _const("axis2", np.array([2], np.int64)),
            _const("base_boxes", DETECTION_BOXES[None]),
            _const("base_labels", DETECTION_LABELS[None]),
        ],
    )


def instance_masks() -> np.ndarray:
    """(1, K, H, W) masks of the instance fixture: 0.9 inside each detection box."""
    masks = np.zeros((1, len(DETECTION_SCORES), *DETECT_SIZE), np.float32)
    for slot, (x0, y0, x1, y1) in enumerate(DETECTION_BOXES.astype(int)):
        masks[0, slot, y0:y1, x0:x1] = 0.9
    return masks


def instance_graph() -> onnx.GraphProto:
    graph = detection_graph()
    k = len(DETECTION_SCORES)
    graph.node.extend(
        [
            helper.make_node("Unsqueeze", ["zeros3", "axis3"], ["zeros4"]),  # (b, 1, 1, 1)
            helper.make_node("Add", ["zeros4", "base_masks"], ["masks"]),
        ]
    )
    graph.initializer.extend([_const("axis3", np.array([3], np.int64)), _const("base_masks", instance_masks())])
    graph.output.append(_value("masks", TensorProto.FLOAT, ["batch", k, "height", "width"]))
    graph.name = "instances"
    return graph


def generation_graph() -> onnx.GraphProto:
    return helper.make_graph(
        [
            helper.make_node("Slice", ["z", "starts", "ends", "axes"], ["z3"]),
            helper.make_node("Tanh", ["z3"], ["t"]),
            helper.make_node("Cast", ["label"], ["label_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["label_f", "axis1"], ["label_col"]),
            helper.make_node("Mul", ["label_col", "tenth"], ["shift"]),
            helper.make_node("Add", ["t", "shift"], ["mixed"]),
            helper.make_node("Tanh", ["mixed"], ["pixel"]),
            helper.make_node("Reshape", ["pixel", "shape_b311"], ["pixel4d"]),
            helper.make_node("Expand", ["pixel4d", "size"], ["image"]),
        ],
        "generator",
        [_value("z", TensorProto.FLOAT, ["batch", Z_DIM]), _value("label", TensorProto.INT64, ["batch"])],
        [_value("image", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [
            _const("starts", np.array([0], np.int64)),
            _const("ends", np.array([3], np.int64)),
            _const("axes", np.array([1], np.int64)),
            _const("axis1", np.array([1], np.int64)),
            _const("tenth", np.array([0.1], np.float32)),
            _const("shape_b311", np.array([-1, 3, 1, 1], np.int64)),
            _const("size", np.array([1, 1, 8, 8], np.int64)),
        ],
    )


def pointcloud_classification_graph() -> onnx.GraphProto:
    weights = np.zeros((3, 6), np.float32)
    weights[[0, 1, 2], [0, 1, 2]] = 5.0
    return helper.make_graph(
        [
            helper.make_node("ReduceMax", ["points"], ["extent"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["extent", "w"], ["logits"]),
        ],
        "pointcloud_classifier",
        [_value("points", TensorProto.FLOAT, ["batch", "points", 3])],
        [_value("logits", TensorProto.FLOAT, ["batch", 6])],
        [_const("w", weights)],
    )


def pointcloud_segmentation_graph() -> onnx.GraphProto:
    weights = np.zeros((3, len(PARTS)), np.float32)
    weights[[0, 1, 2], [0, 1, 2]] = 1.0
    return helper.make_graph(
        [helper.make_node("MatMul", ["points", "w"], ["logits"])],
        "pointcloud_segmenter",
        [_value("points", TensorProto.FLOAT, ["batch", "points", 3])],
        [_value("logits", TensorProto.FLOAT, ["batch", "points", len(PARTS)])],
        [_const("w", weights)],
    )


def _tensors(graph: onnx.GraphProto, values) -> list[TensorInfo]:
    dtypes = {TensorProto.FLOAT: "float32", TensorProto.INT64: "int64"}
    return [
        TensorInfo(
            name=value.name,
            dtype=dtypes[value.type.tensor_type.elem_type],
            shape=[d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim],
        )
        for value in values
    ]


# arch -> (task, graph builder, preprocessing, labels)
FIXTURES = {
    "fixcls": (
        "classification",
        classification_graph,
        Preprocessing(kind="image", image_size=CLASSIFY_SIZE, mean=(0, 0, 0), std=(1, 1, 1)),
        SHAPES,
    ),
    "fixseg": (
        "segmentation",
        segmentation_graph,
        Preprocessing(kind="image", image_size=SEGMENT_SIZE, mean=(0, 0, 0), std=(1, 1, 1)),
        SEG_CLASSES,
    ),
    "fixdet": (
        "detection",
        detection_graph,
        Preprocessing(kind="image", image_size=DETECT_SIZE, mean=(0, 0, 0), std=(1, 1, 1)),
        SHAPES,
    ),
    "fixinst": (
        "instance-segmentation",
        instance_graph,
        Preprocessing(kind="image", image_size=DETECT_SIZE, mean=(0, 0, 0), std=(1, 1, 1)),
        SHAPES,
    ),
    "fixgan": ("generation", generation_graph, Preprocessing(kind="latent", z_dim=Z_DIM), SHAPES),
    "fixpct": (
        "pointcloud-classification",
        pointcloud_classification_graph,
        Preprocessing(kind="points", num_points=NUM_POINTS),
        PRIMITIVES,
    ),
    "fixpart": (
        "pointcloud-segmentation",
        pointcloud_segmentation_graph,
        Preprocessing(kind="points", num_points=NUM_POINTS),
        PARTS,
    ),
}


def model_name(arch: str, attention: str = "ea") -> str:
    return f"{arch}-{attention}-tiny"


def write_model(weights_dir: Path, arch: str, attention: str) -> Path:
    """`weights_dir/<arch>-<attention>-tiny/` with model.onnx and manifest.json."""
    task, build, preprocessing, labels = FIXTURES[arch]
    directory = weights_dir / model_name(arch, attention)
    directory.mkdir(parents=True, exist_ok=True)
    graph = build()
    _save(graph, directory / "model.onnx")
    manifest = Manifest(
        name=directory.name,
        task=task,
        attention=attention,
        arch=arch,
        description=f"test fixture ({task})",
        inputs=_tensors(graph, graph.input),
        outputs=_tensors(graph, graph.output),
        preprocessing=preprocessing,
        labels=labels,
        max_batch_size=MAX_BATCH,
        onnx=describe_file(directory, "model.onnx"),
        opset=OPSET,
    )
    save_manifest(directory, manifest)
    return directory


def write_all_models(weights_dir: Path) -> list[str]:
    """Every fixture model, EA and SA; returns their names."""
    return [write_model(weights_dir, arch, kind).name for arch in FIXTURES for kind in ("ea", "sa")]
