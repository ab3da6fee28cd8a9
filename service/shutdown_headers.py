"""`ShutdownHeadersMiddleware`: from the shutdown signal on, every response closes its connection.

An HTTP/1.1 server may close an idle keep-alive connection at any time, but a client that is
writing its next request on it at that moment loses the request (RFC 9112, section 9.6). The
way out is to say it in advance: `Connection: close` on the last response of each connection,
so the client opens a new one for its next request and the server only ever closes
connections with nothing in flight. Once the lifecycle is shutting down, every response is a
last response. A 503 sent then (inference refused while draining, `/readyz`) also gets a
`Retry-After`, so the client retries elsewhere or later rather than at once.

The server wraps the whole application in it (`service.server.create_server`), outside
FastAPI's own error middleware, so error responses get the headers too.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from easerve.service.lifecycle import ServiceLifecycle

# Seconds a client should wait before retrying a request the shutting-down server refused.
SHUTDOWN_RETRY_AFTER_S = 1


class ShutdownHeadersMiddleware:
    def __init__(self, app: ASGIApp, lifecycle: ServiceLifecycle) -> None:
        self.app = app
        self.lifecycle = lifecycle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            # Decided when the response starts, not when the request arrived: a request accepted
            # before the signal and answered after it is the connection's last one too.
            if message["type"] == "http.response.start" and self.lifecycle.shutting_down:
                headers = [(name, value) for name, value in message.get("headers", []) if name.lower() != b"connection"]
                headers.append((b"connection", b"close"))
                if message["status"] == 503 and not any(name.lower() == b"retry-after" for name, _ in headers):
                    headers.append((b"retry-after", str(SHUTDOWN_RETRY_AFTER_S).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
