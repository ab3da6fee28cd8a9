"""INT8 for CPU: onnxruntime static quantisation (QDQ), calibrated on generated data.

Only the heavy linear ops that hold weights (Conv, MatMul, Gemm with an initializer input) are
quantised. Left in float:
- the EA double normalisation (Softmax over positions, ReduceSum, Div) and every other
  elementwise op: its outputs span many orders of magnitude, which one INT8 scale per tensor
  cannot hold;
- self-attention's activation-by-activation MatMuls (Q·Kᵀ, softmax·V): quantising both operands
  of a small per-sample product costs more in Quantize/Dequantize nodes than the INT8 kernel
  saves (figures: docs/export.md#int8), and the softmax output loses its small weights to the
  8-bit grid.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


class FeedReader(CalibrationDataReader):
    """Hands onnxruntime's calibrator one input feed (input name -> array) at a time."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def calibration_feeds(
    input_names: Sequence[str], batches: Iterable[Sequence[np.ndarray]]
) -> Iterator[dict[str, np.ndarray]]:
    """Input feeds for the calibrator from batches of model inputs in graph-input order."""
    for batch in batches:
        yield dict(zip(input_names, batch, strict=True))


def weighted_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv / MatMul / Gemm nodes that take a weight (an initializer) as an input."""
    weights = {initializer.name for initializer in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in QUANTIZED_OPS and any(name in weights for name in node.input)
    ]


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantiser logs advice on the root logger ("consider pre-processing"); the
    graph it gets is already optimised, so the advice is noise."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(fp32_path: Path, int8_path: Path, feeds: Iterable[dict[str, np.ndarray]]) -> None:
    """Write the statically quantised (QDQ, per-channel weights) graph of `fp32_path` to
    `int8_path`, with activation ranges calibrated (min/max) on `feeds`."""
    nodes = weighted_nodes(onnx.load(str(fp32_path)))
    with _quiet_root_logger():
        quantize_static(
            str(fp32_path),
            str(int8_path),
            FeedReader(feeds),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_quantize=nodes,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
