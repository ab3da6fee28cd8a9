"""`OrtRunner`: an ONNX model on ONNX Runtime, on the best execution provider installed.

Provider order: TensorRT, CUDA (both only with onnxruntime-gpu), then CPU; ONNX Runtime falls
back along that list when one cannot start. On a GPU provider inputs and outputs go through IO
binding, so each run copies host->device and device->host once. The GPU paths (TensorRT/CUDA
providers, IO binding) could not be run where this was written: they are unverified.

A batch whose predicted working memory (the manifest's memory model, `contract`) is over
`heavy_request_mb` runs with onnxruntime's arena shrinkage, so the CPU arena returns what that
run took once it ends instead of keeping it for the process's lifetime (a self-attention model
at a large size needs hundreds of MB to GB for one run).
"""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from easerve.artifacts.ort_session import session_options
from easerve.artifacts.shapes import concrete_shape
from easerve.service.admission import MB
from easerve.service.contract import tensors_working_bytes
from easerve.service.model_files import ModelFiles
from easerve.service.runners.base import InputRejected, Tensors
from easerve.service.settings import Settings

logger = logging.getLogger(__name__)

TENSORRT_PROVIDER = "TensorrtExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
GPU_PROVIDERS = (TENSORRT_PROVIDER, CUDA_PROVIDER)
_BACKEND_NAMES = {
    TENSORRT_PROVIDER: "onnxruntime-tensorrt",
    CUDA_PROVIDER: "onnxruntime-cuda",
    CPU_PROVIDER: "onnxruntime-cpu",
}

ProviderSpec = str | tuple[str, dict[str, str]]

# The run option that frees the CPU arena's unused memory when a run ends.
ARENA_SHRINKAGE = ("memory.enable_memory_arena_shrinkage", "cpu:0")


def shrinking_run_options() -> ort.RunOptions:
    """Run options that give the CPU arena's memory back at the end of the run."""
    options = ort.RunOptions()
    options.add_run_config_entry(*ARENA_SHRINKAGE)
    return options


def _profile_shapes(files: ModelFiles, batch: int) -> str:
    """TensorRT provider shape string for every input at `batch`: "image:8x3x64x64,..."."""
    return ",".join(
        f"{tensor.name}:{'x'.join(map(str, concrete_shape(tensor, files.manifest.preprocessing, batch)))}"
        for tensor in files.manifest.inputs
    )


def tensorrt_provider_options(files: ModelFiles, settings: Settings, max_batch_size: int) -> dict[str, str]:
    """Engine and timing caches under the engine cache dir, one folder per model content, and an
    explicit profile from batch 1 to `max_batch_size` so no shape triggers a rebuild at run time."""
    cache = settings.engine_cache_dir / "onnxruntime-trt" / f"{files.name}-{files.manifest.onnx.sha256[:16]}"
    cache.mkdir(parents=True, exist_ok=True)
    return {
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
        # Precision lives in the graph served (an FP16 variant keeps the EA normalisation in
        # FP32); TensorRT's own FP16 flag could move it to FP16.
        "trt_fp16_enable": "False",
        "trt_profile_min_shapes": _profile_shapes(files, 1),
        "trt_profile_opt_shapes": _profile_shapes(files, max_batch_size),
        "trt_profile_max_shapes": _profile_shapes(files, max_batch_size),
    }


def provider_list(files: ModelFiles, settings: Settings, max_batch_size: int) -> list[ProviderSpec]:
    """The providers to ask for, best first, among those this onnxruntime build has."""
    available = ort.get_available_providers()
    providers: list[ProviderSpec] = []
    if TENSORRT_PROVIDER in available:
        providers.append((TENSORRT_PROVIDER, tensorrt_provider_options(files, settings, max_batch_size)))
    if CUDA_PROVIDER in available:
        providers.append(CUDA_PROVIDER)
    providers.append(CPU_PROVIDER)
    return providers


def runner_session_options(settings: Settings) -> ort.SessionOptions:
    # Spinning off by default: idle threads would take the cores the request path's Python
    # threads need (see docs/benchmarks.md#the-one-client-target-and-onnxruntimes-spinning-threads).
    return session_options(settings.intra_op_threads, settings.inter_op_threads, settings.intra_op_spinning)


class OrtRunner:
    """One onnxruntime InferenceSession; see the module docstring for the providers."""

    def __init__(self, files: ModelFiles, settings: Settings, max_batch_size: int) -> None:
        self._session = ort.InferenceSession(
            str(files.onnx_path),
            sess_options=runner_session_options(settings),
            providers=provider_list(files, settings, max_batch_size),
        )
        self._manifest = files.manifest
        self._shrink_above_bytes = int(settings.heavy_request_mb * MB)
        self._shrinking = shrinking_run_options()
        self._output_names = [output.name for output in self._session.get_outputs()]
        active = self._session.get_providers()[0]
        self._backend = _BACKEND_NAMES.get(active, f"onnxruntime-{active}")
        self.on_gpu = active in GPU_PROVIDERS
        logger.info("%s: onnxruntime %s, providers %s", files.name, ort.__version__, self._session.get_providers())

    @property
    def backend(self) -> str:
        return self._backend

    def run(self, inputs: Tensors) -> Tensors:
        """The outputs for `inputs`; InputRejected when onnxruntime calls an input invalid."""
        try:
            if self.on_gpu:
                return self._run_bound(inputs)
            options = self._shrinking if self.gives_memory_back(inputs) else None
            return dict(zip(self._output_names, self._session.run(self._output_names, inputs, options), strict=True))
        except InvalidArgument as error:
            raise InputRejected(str(error)) from error

    def gives_memory_back(self, inputs: Tensors) -> bool:
        """Whether a run of `inputs` shrinks the arena after it: its predicted working memory is
        over `heavy_request_mb`."""
        shapes = {name: array.shape for name, array in inputs.items()}
        return tensors_working_bytes(self._manifest, shapes) > self._shrink_above_bytes

    def _run_bound(self, inputs: Tensors) -> Tensors:
        binding = self._session.io_binding()
        for name, array in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in self._output_names:
            binding.bind_output(name, "cuda")
        self._session.run_with_iobinding(binding)
        return dict(zip(self._output_names, binding.copy_outputs_to_cpu(), strict=True))

    def close(self) -> None:
        del self._session
