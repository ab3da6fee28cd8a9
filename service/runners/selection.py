"""Which backend serves the models (`--backend auto` decides and says why), and building runners.

auto: onnxruntime when its build has a GPU provider (TensorRT/CUDA, with IO binding); else
native TensorRT when `tensorrt` is installed; else onnxruntime on the CPU. The torch backend is
the reference and is never picked automatically.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

from easerve.service.model_files import ModelFiles
from easerve.service.runners.base import Runner, RunnerFactory
from easerve.service.settings import Backend, Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendChoice:
    backend: str  # a Backend other than "auto", or what a caller-supplied runner factory says
    reason: str


def choose_backend(requested: Backend) -> BackendChoice:
    """The concrete backend for `requested`, and why (for the log and `/v1/models`)."""
    if requested != "auto":
        return BackendChoice(requested, f"--backend {requested} was asked for")
    import onnxruntime as ort

    from easerve.service.runners.ort import GPU_PROVIDERS

    gpu_providers = [p for p in ort.get_available_providers() if p in GPU_PROVIDERS]
    if gpu_providers:
        return BackendChoice("onnxruntime", f"onnxruntime has GPU providers {gpu_providers}")
    if importlib.util.find_spec("tensorrt") is not None:
        return BackendChoice("tensorrt", "onnxruntime has no GPU provider and TensorRT is installed")
    return BackendChoice("onnxruntime", "no GPU provider in onnxruntime and no TensorRT: onnxruntime on the CPU")


def create_runner(files: ModelFiles, settings: Settings, backend: Backend, max_batch_size: int) -> Runner:
    """Build `backend`'s runner for `files` (imports the backend's library only now)."""
    if backend == "tensorrt":
        from easerve.service.runners.tensorrt_native import TensorRTRunner

        return TensorRTRunner(files, settings, max_batch_size)
    if backend == "torch":
        from easerve.service.runners.torch_reference import TorchRunner

        return TorchRunner(files)
    from easerve.service.runners.ort import OrtRunner

    return OrtRunner(files, settings, max_batch_size)


def backend_runners(settings: Settings, choice: BackendChoice) -> RunnerFactory:
    """Runners of `choice`'s backend for `settings`, as model loading asks for them."""

    def build(files: ModelFiles, max_batch_size: int) -> Runner:
        return create_runner(files, settings, choice.backend, max_batch_size)

    return build
