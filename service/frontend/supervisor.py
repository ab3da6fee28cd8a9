"""`easerve serve --http-workers N`: this process becomes the model process and supervises N
HTTP worker processes.

Start-up: the models are loaded here as in one process (`create_app`'s lifespan, no HTTP
served); the listening socket is bound once here and every worker accepts on a duplicate of it
(as uvicorn's own multi-worker mode does), each worker with a shared-memory arena of its own.
A worker that dies is started again with a new arena; the dead one's requests still queued
here are withdrawn and its arena unlinked (only its own in-flight requests are lost).

SIGTERM or Ctrl-C: the workers get SIGTERM and shut down as `easerve serve` does (readyz 503,
grace, drain: everything they sent here is answered); once they have exited the batchers here
drain, the runners are released, every segment is unlinked; exit 0 (1 if a model failed to load).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path

from easerve.service.app import create_app
from easerve.service.collector import freeze_startup_objects
from easerve.service.frontend.arena import ArenaOwner, arena_bytes, segment_prefix
from easerve.service.frontend.model_host import ModelHost
from easerve.service.frontend.shared_metrics import forget_process, share_metrics
from easerve.service.frontend.worker import WorkerSpec, run_worker
from easerve.service.model_config import ModelConfigError
from easerve.service.model_files import ModelFilesError
from easerve.service.server import STRAGGLER_TIMEOUT_S
from easerve.service.settings import Settings

logger = logging.getLogger(__name__)

SUPERVISE_EVERY_S = 0.2
# A worker is started again no sooner than this after its predecessor started (no tight loop
# of restarts when workers cannot start at all).
RESTART_PAUSE_S = 1.0
LISTEN_BACKLOG = 2048  # uvicorn's default
# Past the workers' own shutdown (grace, drain, stragglers), how long before they are killed.
WORKER_EXIT_MARGIN_S = 10.0


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (uvicorn's own choice in the workers), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def refusal(settings: Settings) -> str | None:
    """Why `settings` cannot run with several HTTP workers, or None."""
    if settings.engine != "local":
        return (
            "--http-workers needs --engine local: with Ray Serve the ingress replicas are the HTTP processes "
            "(docs/scale-out.md)"
        )
    return None


def serve_with_workers(settings: Settings, log_format: str) -> int:
    """Serve with `settings.http_workers` HTTP workers until SIGTERM; the exit status of
    `easerve serve` (2: a refused combination, invalid model settings or no model)."""
    why_not = refusal(settings)
    if why_not is not None:
        print(f"easerve serve: {why_not}")
        return 2
    with tempfile.TemporaryDirectory(prefix="easerve-") as scratch:
        directory = Path(scratch)
        (directory / "metrics").mkdir()
        share_metrics(str(directory / "metrics"))
        try:
            supervisor = Supervisor(settings, directory, log_format)
        except (ModelFilesError, ModelConfigError) as error:
            logger.error("%s", error)
            return 2
        except OSError as error:
            logger.error("cannot listen on %s:%d: %s", settings.host, settings.port, error)
            return 1
        freeze_startup_objects()
        with asyncio.Runner(loop_factory=_new_event_loop) as runner:
            return runner.run(supervisor.run())


def worker_settings(settings: Settings) -> Settings:
    """A worker's settings: the server's memory budget shared among the workers, so together
    they hold it (each still admits a request when it has nothing else in flight); the rest as
    given (threads, connections and the per-request limits are each worker's own)."""
    return settings.model_copy(update={"server_memory_mb": settings.server_memory_mb / settings.http_workers})


def bind_listener(host: str, port: int) -> socket.socket:
    """The TCP socket every worker accepts on, bound and listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(LISTEN_BACKLOG)
    except OSError:
        listener.close()
        raise
    return listener


@dataclass(frozen=True)
class _Worker:
    index: int
    process: BaseProcess
    arena: str | None
    started: float  # time.monotonic()


class Supervisor:
    def __init__(self, settings: Settings, scratch: Path, log_format: str) -> None:
        """Finds the models (ModelFilesError, ModelConfigError) and binds the port (OSError)."""
        self._settings = settings
        self._model_app = create_app(settings, on_load_failure=self._load_failed)
        repository = self._model_app.state.service.repository
        self._listener = bind_listener(settings.host, settings.port)
        self._arenas = ArenaOwner(segment_prefix(), arena_bytes(repository, settings.http_workers))
        self._host = ModelHost(repository, self._model_app.state.service.control, self._arenas.buffer)
        self._channel_path = str(scratch / "models.sock")
        self._metrics_directory = str(scratch / "metrics")
        self._log_format = log_format
        self._spawn = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._stopping: asyncio.Event | None = None
        self._exit_code = 0

    async def run(self) -> int:
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signalled, sig)
        await self._host.start(self._channel_path)
        host, port = self._listener.getsockname()[:2]
        logger.info(
            "listening on http://%s:%d with %d HTTP workers; shared-memory arenas of %.1f MiB (%s-*)",
            host,
            port,
            self._settings.http_workers,
            self._arenas.size / 2**20,
            self._arenas.prefix,
        )
        try:
            async with self._model_app.router.lifespan_context(self._model_app):
                try:
                    self._workers = [self._start(index) for index in range(self._settings.http_workers)]
                    await self._supervise()
                finally:
                    await self._stop_workers()
                logger.info("HTTP workers stopped; draining the models")
        finally:
            await self._host.close()
            self._arenas.close()
        return self._exit_code

    def _start(self, index: int) -> _Worker:
        arena = self._arenas.create(index)
        spec = WorkerSpec(
            index,
            worker_settings(self._settings),
            self._listener,
            self._channel_path,
            arena,
            self._metrics_directory,
            self._log_format,
        )
        process = self._spawn.Process(target=run_worker, args=(spec,), name=f"easerve-http-{index}")
        process.start()
        return _Worker(index, process, arena, time.monotonic())

    async def _supervise(self) -> None:
        """Start a worker again whenever one exits, until asked to stop."""
        assert self._stopping is not None
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), SUPERVISE_EVERY_S)
            self._arenas.release_retired()
            for slot, worker in enumerate(self._workers):
                if worker.process.exitcode is None or self._stopping.is_set():
                    continue
                if time.monotonic() < worker.started + RESTART_PAUSE_S:
                    continue
                logger.warning(
                    "HTTP worker %d (pid %d) exited with status %s; starting another",
                    worker.index,
                    worker.process.pid,
                    worker.process.exitcode,
                )
                self._forget(worker)
                self._workers[slot] = self._start(worker.index)

    async def _stop_workers(self) -> None:
        """SIGTERM to every worker; wait for their graceful shutdown, kill those past it."""
        self._listener.close()  # the workers hold their own duplicates
        for worker in self._workers:
            if worker.process.exitcode is None:
                os.kill(worker.process.pid, signal.SIGTERM)
        settings = self._settings
        patience = settings.shutdown_grace_s + settings.drain_timeout_s + STRAGGLER_TIMEOUT_S + WORKER_EXIT_MARGIN_S
        deadline = time.monotonic() + patience
        while any(w.process.exitcode is None for w in self._workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for worker in self._workers:
            if worker.process.exitcode is None:
                logger.error("HTTP worker %d did not stop within %.0f s; killing it", worker.index, patience)
                worker.process.kill()
            worker.process.join()
            self._forget(worker)

    def _forget(self, worker: _Worker) -> None:
        forget_process(worker.process.pid)
        self._arenas.retire(worker.arena)
        worker.process.close()

    def _signalled(self, sig: int) -> None:
        assert self._stopping is not None
        if self._stopping.is_set():
            if sig == signal.SIGINT:  # a second Ctrl-C: stop now
                logger.warning("second interrupt: killing the HTTP workers")
                for worker in self._workers:
                    if worker.process.exitcode is None:
                        worker.process.kill()
            return
        logger.info("received %s: stopping the HTTP workers gracefully", signal.Signals(sig).name)
        self._stopping.set()

    def _load_failed(self, reason: str) -> None:
        self._exit_code = 1
        if self._stopping is not None:
            self._stopping.set()
