"""The runner contract: a loaded model that maps a batch of input tensors to output tensors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from easerve.service.model_files import ModelFiles

Tensors = dict[str, np.ndarray]


class Runner(Protocol):
    """A model ready to compute. `run` is called from one thread at a time (the batcher's) with
    every manifest input, batch first, and returns every manifest output, batch first."""

    @property
    def backend(self) -> str:
        """What responses and `/v1/models` report, e.g. "onnxruntime-cpu", "tensorrt"."""
        ...

    def run(self, inputs: Tensors) -> Tensors: ...

    def close(self) -> None:
        """Release the model's memory; the runner is not used afterwards."""
        ...


def on_accelerator(runner: Runner) -> bool:
    """Whether `runner` computes on a GPU (it says so with `on_gpu`); the others compute on the
    CPU's cores, as the request path's Python does."""
    return bool(getattr(runner, "on_gpu", False))


# Builds the runner of one model for a max batch size; tests pass their own to `create_app`.
RunnerFactory = Callable[[ModelFiles, int], Runner]


class InputRejected(Exception):
    """Raised by `Runner.run` when the backend refuses the values or shapes it was given (not a
    fault of the model or the machine): the batcher answers the request that caused it 422."""
