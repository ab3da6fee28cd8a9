"""An onnxruntime session that is called like the PyTorch model it was exported from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from easerve.artifacts.ort_session import session_options


def open_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session on `path` with full graph optimisation; `threads` intra-op threads (None:
    onnxruntime's default, one per core)."""
    options = session_options(intra_op_threads=threads or 0)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtModel:
    """Torch tensors in (positionally, in graph-input order), torch tensors out: one tensor for a
    single-output graph, a tuple otherwise. Lets the task metrics and parity checks treat the
    exported graph exactly like the eager model."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.path = path
        self.session = open_session(path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs, as numpy arrays, for numpy inputs."""
        if len(inputs) != len(self.input_names):
            raise ValueError(f"{self.path.name} takes {len(self.input_names)} inputs, got {len(inputs)}")
        return self.session.run(None, dict(zip(self.input_names, inputs, strict=True)))

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        outputs = [torch.from_numpy(o) for o in self.run(*(t.detach().cpu().numpy() for t in inputs))]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)
