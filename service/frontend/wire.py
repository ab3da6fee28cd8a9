"""The frames between an HTTP worker and the model process, and where their tensors lie.

A frame is two big-endian u32 lengths, a JSON header and a payload of raw bytes. Tensors are
never pickled: a header describes each one (name, dtype, shape, offset) and its bytes lie in the
worker's shared-memory arena, or, when they do not fit there, in the frame's payload.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import numpy as np
import orjson

from easerve.service.batcher import Tensors

_LENGTHS = struct.Struct("!II")
# Each tensor starts on a cache line, so that a mapped view is aligned for any dtype.
ALIGNMENT = 64

Header = dict[str, Any]
TensorSpec = dict[str, Any]


def aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGNMENT) * ALIGNMENT


def packed_size(tensors: Tensors) -> int:
    """The bytes `pack_tensors` needs for `tensors`."""
    return sum(aligned(array.nbytes) for array in tensors.values())


def pack_tensors(tensors: Tensors, buffer: memoryview, start: int) -> list[TensorSpec]:
    """Copy `tensors` into `buffer` from `start` on; their specs, offsets counted from the
    buffer's beginning."""
    specs = []
    offset = start
    for name, array in tensors.items():
        view = np.ndarray(array.shape, array.dtype, buffer=buffer, offset=offset)
        np.copyto(view, array, casting="no")
        specs.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape), "offset": offset})
        offset += aligned(array.nbytes)
    return specs


def tensor_views(specs: list[TensorSpec], buffer: memoryview | bytes) -> Tensors:
    """The tensors `specs` describe, as views of `buffer` (no copy)."""
    return {
        spec["name"]: np.ndarray(tuple(spec["shape"]), np.dtype(spec["dtype"]), buffer=buffer, offset=spec["offset"])
        for spec in specs
    }


def encode_frame(header: Header, payload: bytes | bytearray = b"") -> bytes:
    head = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"".join((_LENGTHS.pack(len(head), len(payload)), head, payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[Header, bytes]:
    """The next frame; IncompleteReadError when the other side has gone."""
    header_size, payload_size = _LENGTHS.unpack(await reader.readexactly(_LENGTHS.size))
    header = orjson.loads(await reader.readexactly(header_size))
    payload = await reader.readexactly(payload_size) if payload_size else b""
    return header, payload
