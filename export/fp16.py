"""FP16 graphs with the attention normalisation kept in FP32.

In FP16 the EA epsilon (1e-9) is 0 and a softmax over ~16k positions underflows whole rows, so
the L1 step of EA's double normalisation divides 0 by 0. The converter therefore leaves every Softmax,
and the ReduceSum / Add / Div nodes that normalise its output, in FP32 (casts around them);
graph inputs and outputs stay FP32 so callers need not change.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import onnx
import onnx_ir
from onnxruntime.transformers.float16 import convert_float_to_float16

from easerve.export.onnx_graph import check_portable

NORMALISATION_OPS = frozenset({"ReduceSum", "Add", "Div"})


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    return consumers


def fp32_island(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes to keep in FP32: each Softmax and the chain of ReduceSum / Add / Div
    nodes fed (directly or through each other) by its output."""
    consumers = _consumers(model.graph)
    kept: dict[str, None] = {}
    frontier = [node for node in model.graph.node if node.op_type == "Softmax"]
    while frontier:
        node = frontier.pop()
        if node.name in kept:
            continue
        kept[node.name] = None
        for output in node.output:
            frontier.extend(c for c in consumers[output] if c.op_type in NORMALISATION_OPS)
    return list(kept)


def _name_nodes(model: onnx.ModelProto) -> None:
    for index, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"


def repaired(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with its nodes in topological order (the converter appends its Casts at the end,
    which onnxruntime tolerates but the ONNX checker and TensorRT's parser do not) and without
    intermediate value_info (the converter leaves some with their old element type)."""
    del model.graph.value_info[:]
    graph = onnx_ir.serde.deserialize_model(model)
    graph.graph.sort()
    return onnx_ir.serde.serialize_model(graph)


def convert_to_fp16(source: Path, destination: Path, keep_normalisation_fp32: bool = True) -> list[str]:
    """Write the FP16 version of the graph at `source` to `destination` (FP32 inputs and outputs)
    and return the names of the nodes kept in FP32. `keep_normalisation_fp32=False` converts
    every node: the naive conversion, kept only to demonstrate why the island is needed."""
    model = onnx.load(str(source))
    _name_nodes(model)
    island = fp32_island(model) if keep_normalisation_fp32 else []
    converted = repaired(convert_float_to_float16(model, keep_io_types=True, node_block_list=island))
    check_portable(converted)
    onnx.save(converted, str(destination))
    return island
