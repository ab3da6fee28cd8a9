"""A Triton / KServe model repository entry for an exported model:
`<repo>/<model>/config.pbtxt` + `<repo>/<model>/1/model.onnx`, the same ONNX file the service
serves, so users who outgrow one machine keep their artifact."""

from __future__ import annotations

import shutil
from pathlib import Path

from easerve.artifacts.manifest import Manifest, TensorInfo

PLATFORM = "onnxruntime_onnx"
MODEL_VERSION = "1"
TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}


def _dims(tensor: TensorInfo) -> str:
    """Triton dims exclude the batch axis (max_batch_size > 0); other symbolic dims are -1."""
    return ", ".join(str(d) if isinstance(d, int) else "-1" for d in tensor.shape[1:])


def _tensor_block(tensor: TensorInfo) -> str:
    return (
        "  {\n"
        f'    name: "{tensor.name}"\n'
        f"    data_type: {TRITON_DTYPES[tensor.dtype]}\n"
        f"    dims: [ {_dims(tensor)} ]\n"
        "  }"
    )


def triton_config(manifest: Manifest, instances: int = 1) -> str:
    """config.pbtxt text: onnxruntime platform, max batch, tensors, dynamic batching, instances
    (KIND_AUTO: on a GPU when Triton has one, else the CPU)."""
    inputs = ",\n".join(_tensor_block(t) for t in manifest.inputs)
    outputs = ",\n".join(_tensor_block(t) for t in manifest.outputs)
    return (
        f'name: "{manifest.name}"\n'
        f'platform: "{PLATFORM}"\n'
        f"max_batch_size: {manifest.max_batch_size}\n"
        f"input [\n{inputs}\n]\n"
        f"output [\n{outputs}\n]\n"
        "dynamic_batching { }\n"
        f"instance_group [ {{ count: {instances}, kind: KIND_AUTO }} ]\n"
    )


def write_triton_model(repository: Path, manifest: Manifest, onnx_path: Path, instances: int = 1) -> Path:
    """Write (or replace) the model's entry in the Triton repository; returns its folder."""
    folder = repository / manifest.name
    version = folder / MODEL_VERSION
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, version / "model.onnx")
    (folder / "config.pbtxt").write_text(triton_config(manifest, instances))
    return folder
