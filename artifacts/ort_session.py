"""onnxruntime session options: one source for export (parity, metrics, speed checks) and the
service's runners."""

from __future__ import annotations

import onnxruntime as ort


def session_options(
    intra_op_threads: int = 0, inter_op_threads: int = 0, spinning: bool | None = None
) -> ort.SessionOptions:
    """Full graph optimisation, sequential execution, warnings only; 0 threads: onnxruntime's
    default. `spinning` sets whether idle intra-op threads spin for work (None: onnxruntime's
    default, on): spinning lowers a lone call's latency but takes the cores a server's other
    threads need."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.log_severity_level = 3
    if spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options
