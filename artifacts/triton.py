"""A model's Triton model configuration: one source for the `config.pbtxt` that
`easerve export --format triton` writes and the JSON that the service's
`GET /v2/models/{m}/config` answers (what perf_analyzer and tritonclient read)."""

from __future__ import annotations

from typing import Any

from easerve.artifacts.manifest import Manifest, TensorInfo

PLATFORM = "onnxruntime_onnx"
TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}
# Values written without quotes in config.pbtxt (protobuf enum names).
_ENUM_PREFIXES = ("TYPE_", "KIND_")


def _tensor(tensor: TensorInfo) -> dict[str, Any]:
    """Triton dims exclude the batch axis (max_batch_size > 0); other symbolic dims are -1."""
    return {
        "name": tensor.name,
        "data_type": TRITON_DTYPES[tensor.dtype],
        "dims": [d if isinstance(d, int) else -1 for d in tensor.shape[1:]],
    }


def model_configuration(
    manifest: Manifest,
    max_batch_size: int | None = None,
    instances: int = 1,
    max_queue_delay_us: int = 0,
    preferred_batch_sizes: tuple[int, ...] = (),
) -> dict[str, Any]:
    """The configuration as Triton's JSON has it: onnxruntime platform, max batch (default the
    manifest's), tensors, dynamic batching, instances (KIND_AUTO: a GPU when Triton has one)."""
    batching: dict[str, Any] = {}
    if preferred_batch_sizes:
        batching["preferred_batch_size"] = list(preferred_batch_sizes)
    if max_queue_delay_us:
        batching["max_queue_delay_microseconds"] = max_queue_delay_us
    return {
        "name": manifest.name,
        "platform": PLATFORM,
        "max_batch_size": manifest.max_batch_size if max_batch_size is None else max_batch_size,
        "input": [_tensor(t) for t in manifest.inputs],
        "output": [_tensor(t) for t in manifest.outputs],
        "dynamic_batching": batching,
        "instance_group": [{"count": instances, "kind": "KIND_AUTO"}],
    }


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value if value.startswith(_ENUM_PREFIXES) else f'"{value}"'
    if isinstance(value, list):
        return "[ " + ", ".join(map(_value, value)) + " ]"
    return str(value)


def _block(fields: dict[str, Any], indent: str) -> str:
    lines = [f"{indent}{key}: {_value(value)}" for key, value in fields.items()]
    return "{\n" + "\n".join(lines) + f"\n{indent[:-2]}}}" if lines else "{ }"


def config_pbtxt(config: dict[str, Any]) -> str:
    """`config` (as `model_configuration` returns it) in protobuf text format."""
    lines = []
    for key, value in config.items():
        if isinstance(value, dict):
            lines.append(f"{key} {_block(value, '  ')}")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            entries = ",\n".join(f"  {_block(entry, '    ')}" for entry in value)
            lines.append(f"{key} [\n{entries}\n]")
        else:
            lines.append(f"{key}: {_value(value)}")
    return "\n".join(lines) + "\n"
