"""Answers serialised once, to bytes, on the thread that made them.

An inference answer is built as plain dicts and lists (numpy scalars and arrays allowed) and
encoded by orjson where it is made (a runner's or a worker's thread), so the event loop only
sends bytes: no second validation against the route's `response_model` (which still documents
the body in the OpenAPI schema) and no `json.dumps` on the loop.
"""

from __future__ import annotations

import orjson
from starlette.responses import Response


def json_bytes(payload: object) -> bytes:
    """`payload` as JSON (numpy arrays and scalars included; NaN and infinities become null)."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


class JSONBytes(Response):
    """A response whose body is already JSON bytes (`json_bytes`)."""

    media_type = "application/json"
