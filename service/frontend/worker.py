"""One HTTP worker process: the service's app (`create_app`) on the listening socket it inherited,
its models computed by the model process (`shared_batcher`).

Started by the supervisor (multiprocessing's spawn: a fresh interpreter, no state of the model
process). It shuts down as `easerve serve` does on SIGTERM (`DrainingServer`: grace, drain, exit
0), and at once if the model process goes away.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from easerve.service.app import create_app
from easerve.service.collector import freeze_startup_objects
from easerve.service.frontend.arena import WorkerArena
from easerve.service.frontend.channel import ModelChannel
from easerve.service.frontend.followed_control import FollowedControl
from easerve.service.frontend.shared_batcher import shared_memory_loader
from easerve.service.frontend.shared_metrics import share_metrics, shared_registry
from easerve.service.metrics import ServiceMetrics
from easerve.service.server import DrainingServer, create_server
from easerve.service.settings import Settings

WORKER_HEADER = "x-easerve-worker"  # the process id of the worker that answered


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker is started with (pickled to the new process; the socket is passed as a
    duplicate of the supervisor's descriptor)."""

    index: int
    settings: Settings
    listener: socket.socket
    channel_path: str
    arena: str | None
    metrics_directory: str
    log_format: str


class WorkerHeaderMiddleware:
    """Says which worker process answered, in `X-Easerve-Worker`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._header = (WORKER_HEADER.encode(), str(os.getpid()).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_worker(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self._header]}
            await send(message)

        await self.app(scope, receive, send_with_worker)


def run_worker(spec: WorkerSpec) -> None:
    """The worker's process: serve until SIGTERM; exit status 0 after a clean shutdown, 1 if its
    models could not be had from the model process."""
    settings = spec.settings
    logging.basicConfig(level=settings.log_level.upper(), format=spec.log_format)
    share_metrics(spec.metrics_directory)
    server: DrainingServer | None = None

    def stop() -> None:
        if server is not None:
            server.stop()

    arena = WorkerArena(spec.arena) if spec.arena else None
    channel = ModelChannel(spec.channel_path, arena, on_lost=stop)
    app = create_app(
        settings,
        on_load_failure=lambda reason: stop(),
        model_loader=shared_memory_loader(channel, settings),
        model_control=lambda repository, settings, loader: FollowedControl(repository, settings, loader, channel),
        metrics=ServiceMetrics(exposed=shared_registry()),
    )
    app.add_middleware(WorkerHeaderMiddleware)
    server = create_server(app, settings)
    freeze_startup_objects()
    logging.getLogger(__name__).info("HTTP worker %d (pid %d) accepting", spec.index, os.getpid())
    server.run(sockets=[spec.listener])
    sys.exit(0 if server.started and not app.state.service.lifecycle.error else 1)
