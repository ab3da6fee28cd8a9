"""`BodySizeLimitMiddleware`: no request body over `max_body_bytes` is read, whatever the route.

A declared Content-Length over the limit is answered 413 before the body is touched; a body
without one (chunked) is counted as it streams and refused the moment it passes the limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from easerve.service.errors import PayloadTooLarge, error_response


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _too_large(self, size: int | str) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body of {size} bytes is over the limit of {self.max_body_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            error = self._too_large(int(declared))
            await error_response(error.status_code, error.message, {"Connection": "close"})(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise self._too_large(f"more than {received}")
            return message

        await self.app(scope, limited_receive, send)
