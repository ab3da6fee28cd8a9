"""PyTorch model -> portable ONNX file: dynamo export at opset 18, dynamic axes named as in the
registry, constants folded, onnxruntime's basic graph optimisation saved, checked.

The saved graph holds standard ONNX ops only (no `com.microsoft` fusions), so TensorRT's ONNX
parser and any other runtime can read it; onnxruntime applies its own fusions when it loads it.

Why not the exporter's built-in optimiser: onnxscript's no-op rewrite rules match `x + 0` with an
absolute tolerance of 1e-8, so they delete the EA epsilon (`+ 1e-9` in the L1 normalisation) and a
row whose softmax underflows becomes 0/0 = NaN instead of 0. We fold constants only and let
onnxruntime's basic level (constant folding, Conv+BatchNorm fusion, no-op removal of exact
zeros) do the rest.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
from onnxscript.optimizer import fold_constants, remove_unused_nodes
from torch import nn

from easerve.model_defs.registry import ModelEntry, TensorSpec

OPSET = 18
STANDARD_DOMAINS = frozenset({"", "ai.onnx"})
DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
}


class ExportError(RuntimeError):
    """The model could not be turned into a valid, portable ONNX graph."""


@dataclass(frozen=True)
class GraphSignature:
    """Input and output names of a graph, and its dynamic axes: tensor name -> {axis: symbol}."""

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class GraphTensor:
    """A graph input or output as saved: dtype name and dims (int, or the symbol's name)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


def _symbolic_axes(spec: TensorSpec) -> dict[int, str]:
    return {axis: dim for axis, dim in enumerate(spec.shape) if isinstance(dim, str)}


def signature_of(entry: ModelEntry) -> GraphSignature:
    """The graph signature the registry declares for `entry` (string dims become dynamic)."""
    return GraphSignature(
        input_names=tuple(spec.name for spec in entry.inputs),
        output_names=tuple(spec.name for spec in entry.outputs),
        dynamic_axes={
            spec.name: _symbolic_axes(spec) for spec in (*entry.inputs, *entry.outputs) if _symbolic_axes(spec)
        },
    )


def export_onnx(
    model: nn.Module, example_inputs: Sequence[torch.Tensor], signature: GraphSignature, path: Path
) -> None:
    """Export `model` (eval mode) to `path`: opset 18, the signature's axes dynamic and named.

    The example inputs fix everything else; use a batch of at least 2 so the batch axis is not
    specialised to 1. Raises ExportError if torch cannot export the model, or the graph fails the
    checker or uses non-standard ops.
    """
    program = _torch_to_onnx(model, example_inputs, signature)
    fold_constants(program.model)
    remove_unused_nodes(program.model)
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "raw.onnx"
        program.save(str(raw))
        optimize_with_onnxruntime(raw, path)
    graph = onnx.load(str(path))
    name_dynamic_axes(graph, signature)
    drop_unused_opsets(graph)
    onnx.save(graph, str(path))
    check_portable(graph)


def _torch_to_onnx(
    model: nn.Module, example_inputs: Sequence[torch.Tensor], signature: GraphSignature
) -> torch.onnx.ONNXProgram:
    """torch.export with the signature's dynamic axes, SDPA written out, then the dynamo ONNX
    translation without its optimiser (see the module docstring)."""
    dynamic_shapes = tuple(
        {axis: torch.export.Dim.DYNAMIC for axis in signature.dynamic_axes.get(name, {})}
        for name in signature.input_names
    )
    # The exporter warns about optional torchvision ops on every call; nothing here uses them.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # torch.export's own pytree code trips its LeafSpec deprecation; not ours to act on.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            exported = torch.export.export(model, tuple(example_inputs), dynamic_shapes=dynamic_shapes)
            exported = exported.run_decompositions(
                {torch.ops.aten.scaled_dot_product_attention.default: attention_as_matmuls}
            )
            return torch.onnx.export(
                exported,
                tuple(example_inputs),
                dynamo=True,
                opset_version=OPSET,
                input_names=list(signature.input_names),
                output_names=list(signature.output_names),
                optimize=False,
                verbose=False,
            )
    except RuntimeError as error:  # torch.export's and the ONNX translator's errors
        raise ExportError(f"torch could not export {type(model).__name__}: {error}") from error


def attention_as_matmuls(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """Scaled dot-product attention as MatMul -> Softmax -> MatMul with a constant scale.

    The exporter's own translation computes the scale and the key transpose from runtime shapes
    (Shape, Slice, Concat, Reshape, Cast and an extra Mul per unit): the same result in a graph
    about a quarter larger (eamlp-sa-tiny: 281 nodes against 217).
    """
    if attn_mask is not None or is_causal or dropout_p or enable_gqa:
        raise ExportError("attention masks, causal attention, dropout and GQA are not exported")
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    return torch.softmax((query * scale) @ key.transpose(-2, -1), dim=-1) @ value


def optimize_with_onnxruntime(source: Path, destination: Path) -> None:
    """Save onnxruntime's basic-level optimisation of `source` (standard ops only) to `destination`."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(destination)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def name_dynamic_axes(graph: onnx.ModelProto, signature: GraphSignature) -> None:
    """Rename the exporter's symbols (s0, s1, ...) to the signature's names, everywhere in `graph`.

    The symbols are read off the graph inputs; outputs and intermediate values that share a
    symbol with an input get its name too.
    """
    renames: dict[str, str] = {}
    for value in graph.graph.input:
        for axis, symbol in signature.dynamic_axes.get(value.name, {}).items():
            dim = value.type.tensor_type.shape.dim[axis]
            if dim.dim_param:
                renames[dim.dim_param] = symbol
    values = (*graph.graph.input, *graph.graph.output, *graph.graph.value_info)
    for value in values:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]


def drop_unused_opsets(graph: onnx.ModelProto) -> None:
    """Remove the opset imports onnxruntime adds for its own domains when no node uses them."""
    used = {node.domain for node in graph.graph.node} | {""}
    kept = [opset for opset in graph.opset_import if opset.domain in used]
    del graph.opset_import[:]
    graph.opset_import.extend(kept)


def check_portable(graph: onnx.ModelProto) -> None:
    """Raise ExportError unless `graph` passes the full ONNX checker with standard ops only."""
    foreign = sorted({f"{n.domain}::{n.op_type}" for n in graph.graph.node if n.domain not in STANDARD_DOMAINS})
    if foreign:
        raise ExportError(f"graph uses non-standard ops {', '.join(foreign)}; TensorRT cannot parse it")
    try:
        onnx.checker.check_model(graph, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"ONNX checker rejected the graph: {error}") from error


def graph_tensors(path: Path) -> tuple[list[GraphTensor], list[GraphTensor]]:
    """The inputs and outputs of the saved graph at `path`, as they really are."""
    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(value: onnx.ValueInfoProto) -> GraphTensor:
        tensor_type = value.type.tensor_type
        shape = tuple(d.dim_param or d.dim_value for d in tensor_type.shape.dim)
        return GraphTensor(value.name, DTYPES[tensor_type.elem_type], shape)

    return [describe(v) for v in graph.input], [describe(v) for v in graph.output]
