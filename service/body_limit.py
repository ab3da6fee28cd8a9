"""`BodySizeLimitMiddleware`: no request body over `max_body_bytes` is read, and none is waited
for longer than `body_timeout_s`, whatever the route.

A declared Content-Length over the limit is answered 413 before the body is touched; a body
without one (chunked) is counted as it streams and refused the moment it passes the limit.

A client that sends its headers and then its body slowly, or not at all, would hold a handler,
a connection and the memory of the body received so far for as long as it liked: the body must
be complete `body_timeout_s` after the request arrived, or the request is answered
`408 Request Timeout` with `Connection: close` (the rest of the body is never read, so the
connection cannot carry another request). The request's own deadline still applies while the
body is read (`InferenceContext.read`). The header timeout is the server's
(`service.connections`).
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from easerve.service.errors import PayloadTooLarge, ServiceError, error_response


class BodyTimeout(ServiceError):
    """The request's body did not arrive within `body_timeout_s`."""

    status_code = 408
    reason = "body_timeout"

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    def _too_large(self, size: int | str) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body of {size} bytes is over the limit of {self.max_body_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        # bytes.isdigit() is ASCII only: a malformed length is left to the server's own parser.
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            error = self._too_large(int(declared))
            await error_response(error.status_code, error.message, {"Connection": "close"})(scope, receive, send)
            return
        body_deadline = time.monotonic() + self.body_timeout_s
        received = 0
        body_complete = False

        async def limited_receive() -> Message:
            nonlocal received, body_complete
            if body_complete:  # later calls only wait for a disconnect: not timed
                return await receive()
            try:
                async with asyncio.timeout(max(0.0, body_deadline - time.monotonic())):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(f"the request body was not received within {self.body_timeout_s:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise self._too_large(f"more than {received}")
                body_complete = not message.get("more_body", False)
            else:
                body_complete = True
            return message

        await self.app(scope, limited_receive, send)
