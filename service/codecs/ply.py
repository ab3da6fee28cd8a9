"""Vertex coordinates from PLY files (ASCII, binary little- and big-endian).

Only what a point cloud needs: the `vertex` element's x, y, z. Elements before it are skipped
(in binary files they must have fixed-size rows, as faces listed after the vertices do not
matter). The vertex count is checked against the limit before any data is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from easerve.service.errors import BadRequest, PayloadTooLarge

_SCALAR_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
_BYTE_ORDERS = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}
_END_HEADER = b"end_header"
_MAX_HEADER_BYTES = 64 * 1024


@dataclass
class _Element:
    name: str
    count: int
    properties: list[tuple[str, str]]  # (name, numpy type code)
    has_list: bool = False


def is_ply(data: bytes) -> bool:
    return data[:3] == b"ply"


def _parse_header(header: str) -> tuple[str, list[_Element]]:
    lines = [line.strip() for line in header.splitlines()]
    if not lines or lines[0] != "ply":
        raise BadRequest("not a PLY file: it must start with 'ply'")
    fmt = None
    elements: list[_Element] = []
    for line in lines[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) == 3 and words[1] in _BYTE_ORDERS:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(_Element(words[1], int(words[2]), []))
        elif words[0] == "property" and elements and len(words) == 5 and words[1] == "list":
            elements[-1].has_list = True
        elif words[0] == "property" and elements and len(words) == 3 and words[1] in _SCALAR_TYPES:
            elements[-1].properties.append((words[2], _SCALAR_TYPES[words[1]]))
        else:
            raise BadRequest(f"malformed PLY header line: {line!r}")
    if fmt is None:
        raise BadRequest("malformed PLY header: no supported 'format' line")
    return fmt, elements


def _vertex_element(elements: list[_Element]) -> tuple[int, _Element]:
    for index, element in enumerate(elements):
        if element.name == "vertex":
            names = [name for name, _ in element.properties]
            if element.has_list or not {"x", "y", "z"} <= set(names):
                raise BadRequest("PLY vertex element needs scalar x, y and z properties")
            return index, element
    raise BadRequest("PLY file has no vertex element")


def _ascii_vertices(body: bytes, skipped_rows: int, vertex: _Element) -> np.ndarray:
    lines = body.decode("ascii", errors="replace").splitlines()
    rows = lines[skipped_rows : skipped_rows + vertex.count]
    try:
        values = np.array(" ".join(rows).split(), dtype=np.float64)
        return values.reshape(vertex.count, len(vertex.properties))
    except ValueError:
        raise BadRequest(f"PLY vertex data is truncated or not numeric (expected {vertex.count} rows)") from None


def _binary_vertices(body: bytes, order: str, before: list[_Element], vertex: _Element) -> np.ndarray:
    offset = 0
    for element in before:
        if element.has_list:
            raise BadRequest(f"binary PLY: element {element.name!r} with list properties before the vertices")
        offset += element.count * np.dtype([(n, order + t) for n, t in element.properties]).itemsize
    row = np.dtype([(name, order + code) for name, code in vertex.properties])
    if len(body) < offset + vertex.count * row.itemsize:
        raise BadRequest(f"binary PLY is truncated: {vertex.count} vertices need {vertex.count * row.itemsize} bytes")
    table = np.frombuffer(body, dtype=row, count=vertex.count, offset=offset)
    return np.stack([table[name].astype(np.float64) for name, _ in vertex.properties], axis=1)


def parse_ply(data: bytes, max_points: int) -> np.ndarray:
    """float64 (P, 3) x, y, z of the vertices. BadRequest for a malformed or truncated file,
    PayloadTooLarge for more than `max_points` vertices."""
    end = data.find(_END_HEADER, 0, _MAX_HEADER_BYTES)
    if not is_ply(data) or end < 0:
        raise BadRequest("not a PLY file, or its header has no 'end_header'")
    body_start = data.find(b"\n", end) + 1
    if body_start == 0:
        raise BadRequest("PLY file ends in its header")
    fmt, elements = _parse_header(data[:end].decode("ascii", errors="replace"))
    index, vertex = _vertex_element(elements)
    if vertex.count > max_points:
        raise PayloadTooLarge(f"{vertex.count} points is over the limit of {max_points}")
    body = data[body_start:]
    if fmt == "ascii":
        table = _ascii_vertices(body, sum(e.count for e in elements[:index]), vertex)
    else:
        table = _binary_vertices(body, _BYTE_ORDERS[fmt], elements[:index], vertex)
    columns = [name for name, _ in vertex.properties]
    return table[:, [columns.index("x"), columns.index("y"), columns.index("z")]]
