"""Triton's binary tensor data extension: a JSON header, then raw tensor bytes, in one body.

The `Inference-Header-Content-Length` header gives the JSON's length; each input (or output)
with `parameters.binary_data_size` takes that many bytes of the rest, in order.
"""

from __future__ import annotations

from typing import Any

from fastapi import Response

from easerve.service.errors import BadRequest
from easerve.service.json_answers import json_bytes
from easerve.service.v2.schemas import InferRequest, RequestOutput
from easerve.service.v2.tensors import BINARY_DATA_SIZE

HEADER_LENGTH = "inference-header-content-length"
BINARY_DATA_OUTPUT = "binary_data_output"
BINARY_DATA = "binary_data"


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary rest) of a request body."""
    if header_length is None:
        return body, b""
    # isdigit() alone takes digits of other scripts ("²", "٣") that int() then refuses.
    if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
        raise BadRequest(f"{HEADER_LENGTH} {header_length!r} is not a length within the {len(body)}-byte body")
    length = int(header_length)
    return body[:length], body[length:]


def binary_inputs(request: InferRequest, rest: bytes) -> dict[str, bytes]:
    """Each binary input's bytes; BadRequest unless the sizes add up to the binary part exactly."""
    blobs = {}
    offset = 0
    for tensor in request.inputs:
        size = tensor.parameters.get(BINARY_DATA_SIZE)
        if size is None:
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequest(f"input {tensor.name!r}: {BINARY_DATA_SIZE} must be a non-negative integer")
        blobs[tensor.name] = rest[offset : offset + size]
        offset += size
    if offset != len(rest):
        raise BadRequest(f"the binary data is {len(rest)} bytes, the inputs' {BINARY_DATA_SIZE} add up to {offset}")
    return blobs


def wants_binary(request: InferRequest, output: RequestOutput | None) -> bool:
    """Whether an output is to be returned as binary data."""
    if output is not None and BINARY_DATA in output.parameters:
        return bool(output.parameters[BINARY_DATA])
    return bool(request.parameters.get(BINARY_DATA_OUTPUT, False))


def encode_response(document: dict[str, Any], blobs: list[bytes], binary: bool) -> Response:
    """JSON alone, or (`binary`: some output is binary) the JSON header + the outputs' bytes;
    `document` holds the values of a `schemas.InferResponse`, without the fields left out."""
    header = json_bytes(document)
    if not binary:
        return Response(header, media_type="application/json")
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )
