"""Connection hygiene: a header timeout, a cap on open connections and a lingering close at
shutdown, as a small subclass of uvicorn's HTTP protocol (`uvicorn.Config(http=...)` takes it).

What uvicorn alone does, and why that is not enough:
- Its only connection timer is the keep-alive one, armed when a response ends and disarmed by
  the first byte of the next request. A connection that never completes a request (opened and
  silent, or trickling its headers a byte at a time) stays open for ever; enough of them use up
  the process's file descriptors.
- It accepts connections as long as it has file descriptors; after that `accept` fails for
  everyone, health probes included.
- At shutdown it closes idle connections at once; a request the client was writing on one at
  that moment is lost (reset).

What `ConnectionPolicy` adds, per connection:
- Header timeout: the request line and headers must be complete `header_timeout_s` after the
  connection opened, or after the previous response ended on a keep-alive connection; if not,
  `408 Request Timeout` + `Connection: close` (a connection that never sent a byte of the
  request is just closed). Idle keep-alive connections are still closed by uvicorn's own
  `timeout_keep_alive`; the body timeout is enforced by the application (`service.body_limit`).
- Connection cap: a connection opened while more than `max_connections` are open is accepted,
  but it only serves `/healthz` and `/readyz` (probes still see the process alive and
  unready-or-ready); every other path gets 503 + Retry-After + Connection: close without
  reaching the application, and it has `OVER_CAPACITY_HEADER_TIMEOUT_S` to send its request.
  Past `ceiling` open connections (the open-file limit less a reserve for the rest of the
  process) a new connection is closed as soon as it is accepted, so file descriptors never run
  out; below it every connection is accepted and over-capacity ones soon closed, so probes get in
  even while thousands of idle connections come and go.
- Lingering close at shutdown: an idle connection is closed `SHUTDOWN_LINGER_S` after the server
  asks, not at once, so a request already on its way is still answered (with Connection: close).

httptools (uvicorn's choice when installed) and h11 are both supported: the subclass only uses
hooks the two implementations share (`connection_made`, `data_received`, `on_response_complete`,
`shutdown`, `connection_lost`, `self.app`, `self.cycle`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

# Paths an over-capacity connection may still use: the probes.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
# How long an over-capacity connection may take to send its request (a probe sends it at once).
OVER_CAPACITY_HEADER_TIMEOUT_S = 1.0
# How long an idle connection stays open once the server shuts down, for a request on its way.
SHUTDOWN_LINGER_S = 0.5
# File descriptors kept for everything but client connections (listener, logs, model files,
# event loop, runtimes), and the least margin between the cap and the ceiling.
FD_RESERVE = 256
MIN_CEILING_MARGIN = 32
# At most one over-capacity warning per this many seconds (an overload would flood the log).
WARNING_INTERVAL_S = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    max_connections: int  # past it: probes only
    ceiling: int  # past it: closed at accept


def raise_open_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (the soft one is often 1024,
    too few for a server); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:  # e.g. an infinite hard limit the kernel caps
            logger.warning("could not raise the open-file limit from %d to %s: %s", soft, hard, error)
    return soft


def connection_limits(max_connections: int, header_timeout_s: float, open_files: int) -> ConnectionLimits:
    """The cap and the ceiling for `max_connections`, both under the open-file limit: the ceiling
    leaves `FD_RESERVE` descriptors for the rest of the process, and the cap leaves at least
    `MIN_CEILING_MARGIN` under the ceiling for probes. The ceiling is as high as the descriptors
    allow: below it a connection over the cap is kept just long enough to tell a probe (which
    is answered) from the rest (503 or closed within `OVER_CAPACITY_HEADER_TIMEOUT_S`), so a
    flood of idle connections does not shut the probes out."""
    ceiling = max(2, open_files - FD_RESERVE)
    cap = max(1, min(max_connections, ceiling - min(MIN_CEILING_MARGIN, ceiling // 2)))
    if cap < max_connections:
        logger.warning(
            "max_connections lowered from %d to %d: the open-file limit is %d", max_connections, cap, open_files
        )
    return ConnectionLimits(header_timeout_s=header_timeout_s, max_connections=cap, ceiling=ceiling)


class ConnectionPolicy:
    """The mixin; see the module docstring. `limits` is set on the concrete class."""

    limits: ClassVar[ConnectionLimits]
    _last_warning: ClassVar[float] = 0.0

    # uvicorn's protocol attributes used here
    app: ASGIApp
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    connections: set[Any]
    server_state: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_timeout_s = self.limits.header_timeout_s
        self._request_begun = False  # bytes of a request whose headers are not complete yet
        self._lingering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        open_connections = len(self.connections)  # this one included
        if open_connections > self.limits.ceiling:
            self._warn(
                f"{open_connections} connections open, past the ceiling of {self.limits.ceiling}: closing new ones"
            )
            transport.close()
            return
        if open_connections > self.limits.max_connections:
            self._warn(f"{open_connections} connections open, over max_connections: new ones only serve probes")
            self.app = OverCapacityApp(self.app)
            self._header_timeout_s = min(self._header_timeout_s, OVER_CAPACITY_HEADER_TIMEOUT_S)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is not None and data:
            self._request_begun = True
        super().data_received(data)  # type: ignore[misc]
        if self._request_in_progress():
            self._cancel_header_timer()
            if self._lingering:
                self.cycle.keep_alive = False  # answered, then closed: the server is stopping

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        # Idle again (not a pipelined request started by uvicorn): time the next request's headers.
        if not self.transport.is_closing() and not self._request_in_progress():
            self._request_begun = False
            self._arm_header_timer()

    def shutdown(self) -> None:
        """Called by uvicorn when it stops: a busy connection closes after its response
        (uvicorn's own), an idle one after `SHUTDOWN_LINGER_S` unless a request arrives."""
        if self.transport.is_closing():
            return
        if self._request_in_progress():
            super().shutdown()  # type: ignore[misc]
            return
        self._lingering = True
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(SHUTDOWN_LINGER_S, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    # -- the header timer -------------------------------------------------------------

    def _request_in_progress(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self._header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._request_in_progress():
            return
        if self._request_begun:
            self._send_408()
        self.transport.close()

    def _send_408(self) -> None:
        body = json.dumps({"error": "request line and headers not received in time"}).encode()
        lines = [b"HTTP/1.1 408 Request Timeout"]
        lines += [name + b": " + value for name, value in self.server_state.default_headers]
        lines += [
            b"content-type: application/json",
            b"content-length: " + str(len(body)).encode(),
            b"connection: close",
        ]
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)

    @staticmethod
    def _warn(message: str) -> None:
        now = time.monotonic()
        if now - ConnectionPolicy._last_warning >= WARNING_INTERVAL_S:
            ConnectionPolicy._last_warning = now
            logger.warning("%s", message)


class H11Connection(ConnectionPolicy, H11Protocol):
    """`ConnectionPolicy` over uvicorn's h11 protocol."""


try:  # uvicorn's httptools protocol needs httptools (an optional dependency)
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover
    HttpToolsConnection: type[asyncio.Protocol] | None = None
else:

    class HttpToolsConnection(ConnectionPolicy, HttpToolsProtocol):  # type: ignore[no-redef]
        """`ConnectionPolicy` over uvicorn's httptools protocol."""


def protocol_class(limits: ConnectionLimits, http: str = "auto") -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with `ConnectionPolicy` under `limits`. `http` is uvicorn's own
    option: "auto" (httptools when installed, else h11), "httptools" or "h11"."""
    if http == "httptools" and HttpToolsConnection is None:
        raise ImportError("http='httptools' needs the httptools package")
    base = HttpToolsConnection if http in ("auto", "httptools") and HttpToolsConnection is not None else H11Connection
    return type(base.__name__, (base,), {"limits": limits})


class OverCapacityApp:
    """The application as an over-capacity connection sees it: the probes, each answered with
    `Connection: close`; everything else 503 + Retry-After + Connection: close, unread."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:

            async def send_closing(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = [(name, value) for name, value in message.get("headers", []) if name != b"connection"]
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
                await send(message)

            await self.app(scope, receive, send_closing)
            return
        body = json.dumps({"error": "too many open connections; retry later"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1"),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
