"""`TorchRunner`: the reference backend, the trained PyTorch model itself.

Only built when `--backend torch` is asked for; torch, safetensors and the model code
(`model_defs`) are imported then, never by the rest of the service. It rebuilds the registered
model from the checkpoint the manifest names (`source_checkpoint`, with `checkpoint.json` beside
it) and runs it on CUDA when available, else on the CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from easerve.service.model_files import ModelFiles, ModelFilesError
from easerve.service.runners.base import Tensors


class TorchRunner:
    """The model's PyTorch module in eval mode under `torch.inference_mode`."""

    def __init__(self, files: ModelFiles) -> None:
        import torch

        from easerve.training.checkpoint import load_checkpoint

        checkpoint = files.manifest.source_checkpoint
        if checkpoint is None:
            raise ModelFilesError(f"{files.name}: the manifest names no source checkpoint for the torch backend")
        module, _ = load_checkpoint((files.directory / checkpoint.path).parent)
        self._torch = torch
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._module = module.eval().to(self._device)
        self._input_names = [tensor.name for tensor in files.manifest.inputs]
        self._output_names = [tensor.name for tensor in files.manifest.outputs]

    @property
    def backend(self) -> str:
        return f"torch-{self._device.type}"

    def run(self, inputs: Tensors) -> Tensors:
        torch = self._torch
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(inputs[name])).to(self._device) for name in self._input_names]
            result: Any = self._module(*args)
        outputs = result if isinstance(result, (tuple, list)) else (result,)
        return {name: tensor.cpu().numpy() for name, tensor in zip(self._output_names, outputs, strict=True)}

    def close(self) -> None:
        del self._module
        if self._device.type == "cuda":
            self._torch.cuda.empty_cache()
