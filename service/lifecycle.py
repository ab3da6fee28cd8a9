"""The service's life: load and warm up every model (ready), drain on shutdown, release.

Loading runs in the background after the server starts, so `/healthz` answers at once and
`/readyz` turns 200 only when every model is loaded and warmed up. The first model that fails
to load fails the service: readiness never comes and `on_failure` is called (the CLI exits).

Shutdown has two steps (the server calls them, see `service.server`): `begin_shutdown` (phase
"stopping": `/readyz` 503 so load balancers stop sending, but inference still runs normally and
every response says `Connection: close`), then after the grace period `drain` (phase
"draining": new inference requests 503, everything queued is computed and answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Literal

from easerve.service.model_loading import ModelLoader
from easerve.service.repository import ModelRepository, ServedModel
from easerve.service.settings import Settings

logger = logging.getLogger(__name__)

Phase = Literal["loading", "ready", "failed", "stopping", "draining", "stopped"]


class ServiceLifecycle:
    def __init__(
        self,
        repository: ModelRepository,
        loader: ModelLoader,
        settings: Settings,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.repository = repository
        self.phase: Phase = "loading"
        self.error: str | None = None
        self._loader = loader
        self._settings = settings
        self._on_failure = on_failure
        self._loading: asyncio.Task[None] | None = None
        self._draining: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._shutting_down = False

    @property
    def ready(self) -> bool:
        return self.phase == "ready"

    @property
    def shutting_down(self) -> bool:
        """True from `begin_shutdown` (or `drain`) on: responses close their connection."""
        return self._shutting_down

    def start_loading(self) -> None:
        """Load every model in the background (on the running loop)."""
        self._loading = asyncio.get_running_loop().create_task(self._load_all(), name="load-models")

    async def _load_all(self) -> None:
        for model in self.repository:
            try:
                await self._loader(model)
            except Exception as error:
                self._fail(model, error)
                return
            if model.state == "loading":  # the loader may leave it unloaded (an HTTP worker's)
                model.state = "ready"
        if self.phase == "loading":
            self.phase = "ready"
            logger.info("ready: %d model(s) loaded and warmed up", len(self.repository))

    def _fail(self, model: ServedModel, error: Exception) -> None:
        model.state = "failed"
        model.error = str(error) or type(error).__name__
        self.phase = "failed"
        self.error = f"{model.name} failed to load: {model.error}"
        logger.error("%s", self.error, exc_info=error)
        if self._on_failure is not None:
            self._on_failure(self.error)

    def begin_shutdown(self) -> None:
        """Not ready any more (`/readyz` 503), still serving: the grace period before `drain`,
        while load balancers notice. Idempotent; a failed service stays "failed"."""
        self._shutting_down = True
        if self.phase in ("loading", "ready"):
            self.phase = "stopping"

    async def drain(self) -> None:
        """Stop accepting (not ready any more) and finish everything queued; idempotent."""
        self._shutting_down = True
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain_all(), name="drain")
        await self._draining

    def request_started(self) -> None:
        """An inference request began (it will be answered even if a drain starts meanwhile)."""
        self._in_flight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def _drain_all(self) -> None:
        if self.phase != "failed":
            self.phase = "draining"
        logger.info("draining: no new requests; finishing the %d in flight and what is queued", self._in_flight)
        # Requests already past admission (reading or decoding) still reach their batcher.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self._settings.drain_timeout_s)
        models = [model for model in self.repository if model.batcher is not None]
        for model in models:
            model.state = "draining"
        await asyncio.gather(*(model.batcher.drain(self._settings.drain_timeout_s) for model in models))
        logger.info("drained")

    async def close(self) -> None:
        """Drain, then release every batcher and runner."""
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        await self.drain()
        for model in self.repository:
            if model.batcher is not None:
                model.batcher.close()
            for runner in model.runners:
                runner.close()
            model.state = "stopped"
        self.phase = "stopped"
