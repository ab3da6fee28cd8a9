"""`TensorRTRunner`: a native TensorRT engine of the model's served variant.

UNVERIFIED: no GPU nor TensorRT was available where this was written; it follows the TensorRT
10 Python API (tensors by name, `execute_async_v3`) and uses cuda-python for device memory.
Only importable-and-chosen when `tensorrt` is installed (`pip install .[gpu]`).

The engine comes from the one builder and cache of `artifacts.tensorrt`, the same that
`easerve export --format trt` uses: an engine either built is found by the other. Precision is
the variant's graph (fp32, or the fp16 graph with the EA normalisation kept in FP32), built as a
strongly typed network.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from easerve.artifacts.shapes import concrete_shape
from easerve.artifacts.tensorrt import Precision, build_engine
from easerve.service.model_files import ModelFiles, ModelFilesError
from easerve.service.runners.base import Tensors
from easerve.service.settings import Settings

logger = logging.getLogger(__name__)


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


def engine_for(files: ModelFiles, settings: Settings) -> Path:
    """The cached engine of `files`' variant under the service's engine cache, built if absent."""
    if files.variant_name == "int8":
        raise ModelFilesError(f"{files.name}: no TensorRT engine from the INT8 graph; serve fp32 or fp16")
    precision: Precision = files.variant_name
    onnx_files: dict[Precision, Path] = {precision: files.onnx_path}
    return build_engine(onnx_files, files.manifest, precision, settings.engine_cache_dir, log=logger.info)


class TensorRTRunner:
    """One TensorRT engine and execution context with device buffers sized for the max batch."""

    on_gpu = True

    def __init__(self, files: ModelFiles, settings: Settings, max_batch_size: int) -> None:
        import tensorrt as trt

        self._trt = trt
        self._cudart = _import_cudart()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._files = files
        shapes = {
            tensor.name: concrete_shape(tensor, files.manifest.preprocessing, max_batch_size)
            for tensor in files.manifest.inputs
        }
        engine_path = engine_for(files, settings)
        runtime = trt.Runtime(self._logger)
        self._engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        self._context = self._engine.create_execution_context()
        self._stream = _checked(self._cudart.cudaStreamCreate())
        self._names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._inputs = [n for n in self._names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in self._names if n not in self._inputs]
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in self._names}
        self._buffers = {n: self._allocate(n, shapes, max_batch_size) for n in self._names}
        logger.info("%s: TensorRT %s engine %s", files.name, trt.__version__, engine_path.name)

    @property
    def backend(self) -> str:
        return "tensorrt"

    def _allocate(self, name: str, shapes: dict[str, tuple[int, ...]], max_batch_size: int) -> int:
        if name in shapes:
            largest = shapes[name]
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
