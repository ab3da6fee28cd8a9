"""INT8 for CPU: onnxruntime static quantisation (QDQ), calibrated on generated data.

Only the heavy linear ops (Conv, MatMul, Gemm) are quantised. The EA double normalisation
(Softmax over positions, ReduceSum, Div) and every other elementwise op stay in float: its
outputs span many orders of magnitude, which one INT8 scale per tensor cannot hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from pathlib import Path
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


def quantize_int8(
    fp32_path: Path, int8_path: Path, feeds: Iterable[dict[str, np.ndarray]]
) -> None:
    """Write the statically quantised (QDQ, per-channel weights) graph of `fp32_path` to
    `int8_path`, with activation ranges calibrated (min/max) on `feeds`."""
    quantize_static(
        str(fp32_path),
        str(int8_path),
        FeedReader(feeds),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZED_OPS),
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
