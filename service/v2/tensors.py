"""v2 tensors <-> numpy arrays, every malformed input refused with a message naming it.

An input is checked against the manifest: known name, the model's datatype exactly (no silent
casts), a shape the model's contract accepts (`service.contract`: rank, fixed dimensions,
batch within the model's max, sizes within the server's limits), one batch size shared by all
inputs, and data (JSON values or raw little-endian bytes) that fills the shape.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from easerve.artifacts.manifest import Manifest, TensorInfo
from easerve.service.contract import InputLimits, check_shape, check_values
from easerve.service.errors import BadRequest, InvalidInput
from easerve.service.v2.schemas import InferRequest, RequestInput, TensorMetadata

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_NAMES_BY_DTYPE = {dtype: name for name, dtype in DATATYPES.items()}
BINARY_DATA_SIZE = "binary_data_size"


def datatype_of(dtype: np.dtype | str) -> str:
    """The v2 datatype name of a numpy dtype or manifest dtype string."""
    return _NAMES_BY_DTYPE[np.dtype(dtype)]


def tensor_metadata(tensor: TensorInfo) -> TensorMetadata:
    return TensorMetadata(
        name=tensor.name,
        datatype=datatype_of(tensor.dtype),
        shape=[dim if isinstance(dim, int) else -1 for dim in tensor.shape],
    )


def _from_json(given: RequestInput, dtype: np.dtype) -> np.ndarray:
    if given.data is None:
        raise BadRequest(f"input {given.name!r} has neither 'data' nor parameters.{BINARY_DATA_SIZE}")
    try:
        values = np.asarray(given.data)
    except ValueError:
        raise BadRequest(f"input {given.name!r}: 'data' is ragged (nested lists of different lengths)") from None
    wanted = math.prod(given.shape)
    if values.size != wanted:
        raise BadRequest(f"input {given.name!r}: shape {given.shape} needs {wanted} values, 'data' has {values.size}")
    allowed = "b" if dtype.kind == "b" else ("biu" if dtype.kind in "iu" else "biuf")
    if values.dtype.kind not in allowed:
        raise BadRequest(f"input {given.name!r}: 'data' holds values that are not {datatype_of(dtype)}")
    return values.astype(dtype).reshape(given.shape)


def _from_bytes(given: RequestInput, blob: bytes, dtype: np.dtype) -> np.ndarray:
    wanted = math.prod(given.shape) * dtype.itemsize
    if len(blob) != wanted:
        raise BadRequest(
            f"input {given.name!r}: shape {given.shape} of {datatype_of(dtype)} needs {wanted} bytes, got {len(blob)}"
        )
    return np.frombuffer(blob, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(given.shape)


def decode_inputs(
    request: InferRequest, blobs: dict[str, bytes], manifest: Manifest, limits: InputLimits
) -> dict[str, np.ndarray]:
    """The model's inputs from a v2 request (`blobs`: binary data by input name). Shapes are
    checked against the model's contract (`contract.check_shape`) before any data is converted;
    every malformed input is a BadRequest (400, as the protocol has it), sizes over a limit a
    PayloadTooLarge, values the model cannot take (NaN, a class it lacks) an InvalidInput."""
    expected = {tensor.name: tensor for tensor in manifest.inputs}
    given = {}
    for tensor in request.inputs:
        if tensor.name not in expected:
            raise BadRequest(f"unknown input {tensor.name!r}; {manifest.name} takes {sorted(expected)}")
        if tensor.name in given:
            raise BadRequest(f"input {tensor.name!r} is given twice")
        given[tensor.name] = tensor
    missing = sorted(set(expected) - set(given))
    if missing:
        raise BadRequest(f"missing input(s) {missing} of {manifest.name}")
    arrays = {}
    for name, tensor in given.items():
        dtype = np.dtype(expected[name].dtype)
        if tensor.datatype != datatype_of(dtype):
            raise BadRequest(
                f"input {name!r} has datatype {tensor.datatype}; {manifest.name} expects {datatype_of(dtype)}"
            )
        try:
            check_shape(tensor.shape, expected[name], manifest, limits)
        except InvalidInput as error:
            raise BadRequest(error.message) from None
        arrays[name] = _from_bytes(tensor, blobs[name], dtype) if name in blobs else _from_json(tensor, dtype)
    batches = {array.shape[0] for array in arrays.values()}
    if len(batches) != 1:
        raise BadRequest(f"inputs disagree on the batch size: {sorted(batches)}")
    for name, array in arrays.items():
        check_values(name, array, manifest)
    return arrays


def encode_output(name: str, array: np.ndarray, binary: bool) -> tuple[dict[str, Any], bytes]:
    """The response entry of one output (`schemas.ResponseOutput`, as plain values for
    `json_bytes`: the data stays a numpy array, which orjson writes without a Python list); with
    `binary`, its data as little-endian bytes instead."""
    entry: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype_of(array.dtype)}
    if binary:
        blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        return entry | {"parameters": {BINARY_DATA_SIZE: len(blob)}}, blob
    return entry | {"data": np.ascontiguousarray(array).ravel()}, b""
