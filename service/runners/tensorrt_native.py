"""`TensorRTRunner`: a native TensorRT engine built from the model's ONNX file.

UNVERIFIED: no GPU nor TensorRT was available where this was written; it follows the TensorRT
10 Python API (tensors by name, `execute_async_v3`) and uses cuda-python for device memory.
Only importable-and-chosen when `tensorrt` is installed (`pip install .[gpu]`).

Engines are built once and cached by content: the key hashes the ONNX file's sha256, the
TensorRT version, the GPU's compute capability, the precision and the optimisation profile
(batch 1 to max batch at the manifest's sizes), so a restart loads the engine in seconds and a
different GPU or model never picks up a stale one. TensorRT 11 networks are strongly typed: the
FP16 flag no longer exists there, and FP16 is then ignored with a warning (export an FP16 ONNX).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from easerve.service.model_files import ModelFiles
from easerve.service.runners.base import Tensors
from easerve.service.settings import Settings
from easerve.service.tensor_shapes import concrete_shape

logger = logging.getLogger(__name__)

WORKSPACE_BYTES = 1 << 30


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    return cudart


def _checked(result: tuple[Any, ...]) -> Any:
    """cuda-python calls return (error, *values): raise on error, return the value(s)."""
    error, *values = result
    if int(error) != 0:
        raise RuntimeError(f"CUDA error {error}")
    return values[0] if len(values) == 1 else tuple(values)


def engine_cache_key(files: ModelFiles, trt_version: str, compute_capability: str, fp16: bool, profile: str) -> str:
    """Content key of an engine: everything that makes two engines differ."""
    parts = [files.manifest.onnx.sha256, trt_version, compute_capability, "fp16" if fp16 else "fp32", profile]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


class TensorRTRunner:
    """One TensorRT engine and execution context with device buffers sized for the max batch."""

    def __init__(self, files: ModelFiles, settings: Settings, max_batch_size: int) -> None:
        import tensorrt as trt

        self._trt = trt
        self._cudart = _import_cudart()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._files = files
        shapes = {
            tensor.name: (
                concrete_shape(tensor, files.manifest.preprocessing, 1),
                concrete_shape(tensor, files.manifest.preprocessing, max_batch_size),
            )
            for tensor in files.manifest.inputs
        }
        properties = _checked(self._cudart.cudaGetDeviceProperties(0))
        capability = f"{properties.major}.{properties.minor}"
        fp16 = settings.tensorrt_fp16 and hasattr(trt.BuilderFlag, "FP16")
        if settings.tensorrt_fp16 and not fp16:
            logger.warning(
                "%s: TensorRT %s has no FP16 flag (strongly typed); building FP32", files.name, trt.__version__
            )
        key = engine_cache_key(files, trt.__version__, capability, fp16, repr(sorted(shapes.items())))
        cache_dir = settings.engine_cache_dir / "tensorrt"
        cache_dir.mkdir(parents=True, exist_ok=True)
        engine_path = cache_dir / f"{files.name}-{key}.engine"
        if not engine_path.is_file():
            self._build(engine_path, cache_dir / f"timing-{capability}.cache", shapes, fp16)
        runtime = trt.Runtime(self._logger)
        self._engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        self._context = self._engine.create_execution_context()
        self._stream = _checked(self._cudart.cudaStreamCreate())
        self._names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._inputs = [n for n in self._names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in self._names if n not in self._inputs]
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in self._names}
        self._buffers = {n: self._allocate(n, shapes, max_batch_size) for n in self._names}
        logger.info(
            "%s: TensorRT %s engine %s (compute capability %s)",
            files.name,
            trt.__version__,
            engine_path.name,
            capability,
        )

    @property
    def backend(self) -> str:
        return "tensorrt"

    def _build(
        self,
        engine_path: Path,
        timing_cache_path: Path,
        shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]],
        fp16: bool,
    ) -> None:
        trt = self._trt
        logger.info("%s: building a TensorRT engine (once; cached at %s)", self._files.name, engine_path)
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(self._files.onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"{self._files.name}: TensorRT cannot parse the ONNX file: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        timing_cache = config.create_timing_cache(
            timing_cache_path.read_bytes() if timing_cache_path.is_file() else b""
        )
        config.set_timing_cache(timing_cache, ignore_mismatch=False)
        profile = builder.create_optimization_profile()
        for name, (smallest, largest) in shapes.items():
            profile.set_shape(name, smallest, largest, largest)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"{self._files.name}: TensorRT engine build failed")
        partial = engine_path.with_suffix(".partial")
        partial.write_bytes(bytes(serialized))
        partial.replace(engine_path)
        timing_cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))

    def _allocate(
        self, name: str, shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]], max_batch_size: int
    ) -> int:
        if name in shapes:
            largest = shapes[name][1]
        else:
            tensor = next(t for t in self._files.manifest.outputs if t.name == name)
            largest = concrete_shape(tensor, self._files.manifest.preprocessing, max_batch_size)
        size = int(np.prod(largest)) * self._dtypes[name].itemsize
        return int(_checked(self._cudart.cudaMalloc(size)))

    def run(self, inputs: Tensors) -> Tensors:
        cudart = self._cudart
        for name in self._inputs:
            array = np.ascontiguousarray(inputs[name], dtype=self._dtypes[name])
            self._context.set_input_shape(name, array.shape)
            _checked(
                cudart.cudaMemcpyAsync(
                    self._buffers[name],
                    array.ctypes.data,
                    array.nbytes,
                    cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                    self._stream,
                )
            )
        for name in self._names:
            self._context.set_tensor_address(name, self._buffers[name])
        if not self._context.execute_async_v3(self._stream):
            raise RuntimeError(f"{self._files.name}: TensorRT execution failed")
        outputs = {}
        for name in self._outputs:
            host = np.empty(tuple(self._context.get_tensor_shape(name)), dtype=self._dtypes[name])
            _checked(
                cudart.cudaMemcpyAsync(
                    host.ctypes.data,
                    self._buffers[name],
                    host.nbytes,
                    cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                    self._stream,
                )
            )
            outputs[name] = host
        _checked(cudart.cudaStreamSynchronize(self._stream))
        return outputs

    def close(self) -> None:
        for pointer in self._buffers.values():
            self._cudart.cudaFree(pointer)
        self._cudart.cudaStreamDestroy(self._stream)
        del self._context, self._engine
