"""`DrainingServer`: uvicorn, with a graceful drain on the first SIGTERM or Ctrl-C.

Plain uvicorn stops listening at once on SIGTERM. Here the first signal starts the app's drain
(`/readyz` turns 503, new inference requests are answered 503, everything queued is computed
and answered) and only then lets uvicorn stop, which finishes the open responses. A second
Ctrl-C forces the exit. A drained shutdown exits with status 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from types import FrameType

import uvicorn

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._drain_requested = False

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Called by uvicorn's signal handlers: the first signal drains, a later Ctrl-C is
        uvicorn's own (stop now, then force)."""
        if self._drain_requested or self._loop is None:
            if sig == signal.SIGINT or self._loop is None:
                super().handle_exit(sig, frame)
            return
        self._drain_requested = True
        logger.info("received %s: draining before exit", signal.Signals(sig).name)
        self._loop.call_soon_threadsafe(self._start_drain)

    def stop(self) -> None:
        """Stop without draining (e.g. a model failed to load)."""
        self.should_exit = True

    def _start_drain(self) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            await self._drain()
        finally:
            self.should_exit = True
