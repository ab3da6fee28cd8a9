"""Vertex coordinates from PLY files (ASCII, binary little- and big-endian).

In: the bytes of a PLY file. Out: the `vertex` element's x, y, z as float64 (P, 3). Elements
before the vertices are skipped (in binary files they must have fixed-size rows; elements after
the vertices do not matter). Nothing is allocated from what the header claims: the vertex count
is checked against the limit, and in binary files every count against the bytes present, before
any data is parsed. Every malformed file is a BadRequest, never another exception.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

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
_END_HEADER = "end_header"
_MAX_HEADER_BYTES = 64 * 1024
# An element count is a plain decimal number; more digits than this cannot be a real file.
_COUNT = re.compile(r"[0-9]{1,30}")


@dataclass
class _Element:
    name: str
    count: int
    properties: list[tuple[str, str]] = field(default_factory=list)  # (name, numpy type code), scalars
    names: list[str] = field(default_factory=list)  # of every property, list properties included
    has_list: bool = False

    def row_bytes(self) -> int:
        """Bytes of one row in a binary file (only for elements without list properties)."""
        return sum(np.dtype(code).itemsize for _, code in self.properties)


def is_ply(data: bytes) -> bool:
    return data[:3] == b"ply"


def _split_header(data: bytes) -> tuple[list[str], int]:
    """The header's lines (without 'end_header') and the offset where the body starts."""
    start = 0
    lines: list[str] = []
    while True:
        end = data.find(b"\n", start, _MAX_HEADER_BYTES)
        if end < 0:
            if len(data) <= _MAX_HEADER_BYTES and data[start:].strip() == _END_HEADER.encode():
                return lines, len(data)  # 'end_header' is the last thing in the file: an empty body
            raise BadRequest(f"not a PLY file, or no 'end_header' line in its first {_MAX_HEADER_BYTES} bytes")
        line = data[start:end].decode("ascii", errors="replace").strip()
        start = end + 1
        if line == _END_HEADER:
            return lines, start
        lines.append(line)


def _parse_header(lines: list[str]) -> tuple[str, list[_Element]]:
    if not lines or lines[0] != "ply":
        raise BadRequest("not a PLY file: it must start with a 'ply' line")
    fmt = None
    elements: list[_Element] = []
    for line in lines[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) == 3 and words[1] in _BYTE_ORDERS and fmt is None:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and _COUNT.fullmatch(words[2]):
            if any(element.name == words[1] for element in elements):
                raise BadRequest(f"PLY header declares element {words[1]!r} twice")
            elements.append(_Element(words[1], int(words[2])))
        elif words[0] == "property" and elements:
            _add_property(elements[-1], words, line)
        else:
            raise BadRequest(f"malformed PLY header line: {line[:100]!r}")
    if fmt is None:
        raise BadRequest("malformed PLY header: no (single) supported 'format' line")
    return fmt, elements


def _add_property(element: _Element, words: list[str], line: str) -> None:
    if len(words) == 5 and words[1] == "list" and words[2] in _SCALAR_TYPES and words[3] in _SCALAR_TYPES:
        element.has_list = True
        name = words[4]
    elif len(words) == 3 and words[1] in _SCALAR_TYPES:
        name = words[2]
        element.properties.append((name, _SCALAR_TYPES[words[1]]))
    else:
        raise BadRequest(f"malformed PLY property line: {line[:100]!r}")
    if name in element.names:
        raise BadRequest(f"PLY element {element.name!r} declares property {name!r} more than once")
    element.names.append(name)


def _vertex_element(elements: list[_Element]) -> tuple[int, _Element]:
    for index, element in enumerate(elements):
        if element.name == "vertex":
            names = [name for name, _ in element.properties]
            if element.has_list or not {"x", "y", "z"} <= set(names):
                raise BadRequest("PLY vertex element needs scalar x, y and z properties (and no list property)")
            return index, element
    raise BadRequest("PLY file has no vertex element")


def _ascii_vertices(body: bytes, skipped_rows: int, vertex: _Element) -> np.ndarray:
    if skipped_rows + vertex.count > len(body) + 1:  # every row is a line: more rows than bytes is a lie
        raise BadRequest(f"ASCII PLY is truncated: {skipped_rows + vertex.count} rows in {len(body)} bytes")
    lines = body.split(b"\n", skipped_rows + vertex.count)  # the rows needed, then the rest in one piece
    rows = lines[skipped_rows : skipped_rows + vertex.count]
    if len(rows) < vertex.count or (rows and not rows[-1].strip()):
        raise BadRequest(f"ASCII PLY is truncated: expected {vertex.count} vertex rows after {skipped_rows} others")
    if vertex.count == 0:
        return np.empty((0, len(vertex.properties)))
    text = b"\n".join(rows).replace(b"\r", b" ").decode("ascii", errors="replace")
    try:  # (the last row is not blank, so loadtxt has data and does not warn)
        table = np.loadtxt(io.StringIO(text), dtype=np.float64, comments=None, ndmin=2)
    except ValueError as error:
        detail = str(error).split(";")[0]
        raise BadRequest(f"ASCII PLY vertex rows are not {len(vertex.properties)} numbers each: {detail}") from None
    if table.shape != (vertex.count, len(vertex.properties)):
        raise BadRequest(f"ASCII PLY vertex rows are not {vertex.count} rows of {len(vertex.properties)} numbers")
    return table


def _binary_vertices(body: memoryview, order: str, before: list[_Element], vertex: _Element) -> np.ndarray:
    offset = 0
    for element in before:
        if element.has_list:
            raise BadRequest(f"binary PLY: element {element.name!r} with list properties before the vertices")
        offset += element.count * element.row_bytes()  # Python ints: no overflow whatever the header says
    row_bytes = vertex.row_bytes()
    needed = offset + vertex.count * row_bytes
    if len(body) < needed:
        raise BadRequest(f"binary PLY is truncated: its header needs {needed} bytes of data, the file has {len(body)}")
    if vertex.count == 0:
        return np.empty((0, 3))
    columns = []
    position = 0
    for name, code in vertex.properties:
        if name in ("x", "y", "z"):
            column = np.ndarray(
                (vertex.count,),
                dtype=np.dtype(order + code),
                buffer=body,
                offset=offset + position,
                strides=(row_bytes,),
            )
            columns.append((name, column))
        position += np.dtype(code).itemsize
    by_name = dict(columns)
    return np.stack([by_name[axis].astype(np.float64) for axis in ("x", "y", "z")], axis=1)


def parse_ply(data: bytes, max_points: int) -> np.ndarray:
    """float64 (P, 3) x, y, z of the vertices.

    BadRequest: not a PLY file, a malformed header (unknown line, repeated property or element,
    no vertex element or no scalar x/y/z, garbage counts), data truncated or shorter than the
    header's counts, non-numeric ASCII rows. PayloadTooLarge: more than `max_points` vertices.
    """
    if not is_ply(data):
        raise BadRequest("not a PLY file: it must start with 'ply'")
    lines, body_start = _split_header(data)
    fmt, elements = _parse_header(lines)
    index, vertex = _vertex_element(elements)
    if vertex.count > max_points:
        raise PayloadTooLarge(f"{vertex.count} points is over the limit of {max_points}")
    if fmt == "binary_little_endian" or fmt == "binary_big_endian":
        body = memoryview(data)[body_start:]  # no copy: the columns are read in place
        return _binary_vertices(body, _BYTE_ORDERS[fmt], elements[:index], vertex)
    table = _ascii_vertices(data[body_start:], sum(element.count for element in elements[:index]), vertex)
    names = [name for name, _ in vertex.properties]
    return table[:, [names.index("x"), names.index("y"), names.index("z")]]
