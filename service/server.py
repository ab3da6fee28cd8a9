"""`DrainingServer`: uvicorn, with a shutdown that loses no request; `create_server` builds it.

Plain uvicorn stops listening at once on SIGTERM and closes every idle keep-alive connection,
so a client that was writing its next request on one loses it. Here the first SIGTERM or
Ctrl-C runs, in order:

1. Stopping (`shutdown_grace_s`): `/readyz` turns 503 so load balancers stop sending, but the
   server keeps accepting and answering everything, inference included; every response now
   carries `Connection: close` (`service.shutdown_headers`), so no client reuses a connection
   the server is going to close, and the open connections wind down by themselves.
2. Draining (up to `drain_timeout_s`): the batchers stop accepting (new inference requests are
   answered 503 + Retry-After + Connection: close) and everything queued or computing is
   answered.
3. uvicorn's own shutdown: new handshakes are refused first and those under way accepted, so
   closing the listener resets no connection a client already wrote on; then the listener
   closes, idle connections close after a short linger (`service.connections`) and busy ones
   after their response, within `timeout_graceful_shutdown`. Exit status 0.

A second Ctrl-C forces the exit; a second SIGTERM is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from easerve.service.connections import connection_limits, protocol_class, raise_open_file_limit
from easerve.service.settings import Settings
from easerve.service.shutdown_headers import ShutdownHeadersMiddleware

logger = logging.getLogger(__name__)

# After new handshakes are refused: how long the listener keeps accepting those under way (a
# loopback or LAN round trip is well under this), and the most it waits for the connections
# already waiting in the accept queue to be accepted (a saturated loop takes a while).
HANDSHAKE_SETTLE_S = 0.05
ACCEPT_QUEUE_WAIT_S = 3.0
# Past the drain, how long uvicorn waits for the last responses and connections.
STRAGGLER_TIMEOUT_S = 5.0


class DrainingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        drain: Callable[[], Awaitable[None]],
        begin_shutdown: Callable[[], None] | None = None,
        grace_s: float = 0.0,
    ) -> None:
        """`begin_shutdown` is called on the first signal (not ready, connections close after
        their response), `drain` `grace_s` later; the server stops when the drain is done."""
        super().__init__(config)
        self._drain = drain
        self._begin_shutdown = begin_shutdown
        self._grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        self._shutdown_requested = False

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Called by uvicorn's signal handlers: the first signal starts the graceful shutdown,
        a later Ctrl-C forces the exit (uvicorn's own: stop now, re-raise the signal)."""
        if self._shutdown_requested or self._loop is None:
            if self._loop is None:
                super().handle_exit(sig, frame)
            elif sig == signal.SIGINT:
                self._captured_signals.append(sig)
                self.should_exit = self.force_exit = True
            return
        self._shutdown_requested = True
        logger.info("received %s: shutting down gracefully", signal.Signals(sig).name)
        self._loop.call_soon_threadsafe(self._start_shutdown)

    def stop(self) -> None:
        """Stop without draining (e.g. a model failed to load)."""
        self.should_exit = True

    def _start_shutdown(self) -> None:
        self._shutdown_task = asyncio.get_running_loop().create_task(self._shut_down(), name="graceful-shutdown")

    async def _shut_down(self) -> None:
        try:
            if self._begin_shutdown is not None:
                self._begin_shutdown()
            if self._grace_s > 0:
                logger.info("not ready; still serving for %g s before draining", self._grace_s)
                await asyncio.sleep(self._grace_s)
            await self._drain()
        finally:
            self.should_exit = True

    async def shutdown(self, sockets=None) -> None:
        """uvicorn's shutdown, once the listeners take no new handshakes and have accepted
        every connection waiting for them."""
        if not self.force_exit and _refuse_new_handshakes(self.servers):
            await asyncio.sleep(HANDSHAKE_SETTLE_S)  # the handshakes under way complete
            deadline = time.monotonic() + ACCEPT_QUEUE_WAIT_S
            while _accept_queue_length(self.servers) and time.monotonic() < deadline and not self.force_exit:
                await asyncio.sleep(0.01)  # the loop accepts them; they are answered and closed
        await super().shutdown(sockets)


def create_server(app: FastAPI, settings: Settings, **config: Any) -> DrainingServer:
    """`app` (from `create_app(settings)`) served as `settings` say: connection limits and
    timeouts, the graceful shutdown. `config` overrides `uvicorn.Config` arguments (tests pass
    `port=0`, `http="h11"`). Raises the process's open-file limit to its hard limit."""
    lifecycle = app.state.service.lifecycle
    limits = connection_limits(settings.max_connections, settings.header_timeout_s, raise_open_file_limit())
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "timeout_graceful_shutdown": STRAGGLER_TIMEOUT_S,
        "ws": "none",  # no WebSocket route: an upgrade request is served as plain HTTP
        **config,
    }
    options["http"] = protocol_class(limits, options.get("http", "auto"))
    uvicorn_config = uvicorn.Config(ShutdownHeadersMiddleware(app, lifecycle), **options)
    return DrainingServer(
        uvicorn_config,
        drain=lifecycle.drain,
        begin_shutdown=lifecycle.begin_shutdown,
        grace_s=settings.shutdown_grace_s,
    )


# -- refusing new handshakes before the listener closes ----------------------------------------
#
# Closing a listening socket resets the connections whose handshake the kernel completed but the
# server has not accepted yet; their clients have already written a request, which is lost. With
# `Connection: close` on every response that queue is where busy clients wait (each request needs
# a new connection), and uvloop does not empty it at once. So before closing, a socket filter
# makes the listener drop new SYNs (not the handshakes under way, nor established connections),
# the loop accepts (and answers) every connection still queued, and only then does uvicorn close
# the listener. A client whose SYN was dropped retries it, finds the port closed and is refused:
# a refused connection, never a lost request. Linux only (SO_ATTACH_FILTER, TCP_INFO); elsewhere
# the listener just closes.

_SO_ATTACH_FILTER = 26
# Classic BPF, run on each TCP segment with the TCP header at offset 0: drop a segment with SYN
# and without ACK (a new connection), keep every other.
_DROP_SYN_PROGRAM = (
    (0x30, 0, 0, 13),  # ldb [13]            the flags byte
    (0x54, 0, 0, 0x12),  # and #0x12         SYN | ACK
    (0x15, 0, 1, 0x02),  # jeq #0x02         SYN alone?
    (0x06, 0, 0, 0),  # ret #0               yes: drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1     no: keep
)


def _refuse_new_handshakes(servers: list[Any]) -> bool:
    """Attach the drop-SYN filter to every TCP listener of `servers`; True if any took it."""
    if not sys.platform.startswith("linux"):
        return False
    instructions = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in _DROP_SYN_PROGRAM))
    program = struct.pack("HL", len(_DROP_SYN_PROGRAM), ctypes.addressof(instructions))
    attached = False
    for server in servers:
        for sock in server.sockets or ():
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, program)
                attached = True
    return attached


def _accept_queue_length(servers: list[Any]) -> int:
    """Connections the kernel completed and the loop has not accepted yet, over every TCP
    listener of `servers` (Linux: `tcpi_unacked` of TCP_INFO on a listening socket; 0 where
    that cannot be read)."""
    waiting = 0
    for server in servers:
        for sock in server.sockets or ():
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            with contextlib.suppress(OSError, struct.error):
                info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
                waiting += struct.unpack_from("I", info, 24)[0]
    return waiting
