"""The service's life: load and warm up every model (ready), drain on shutdown, release.

Loading runs in the background after the server starts, so `/healthz` answers at once and
`/readyz` turns 200 only when every model is loaded and warmed up. The first model that fails
to load fails the service: readiness never comes and `on_failure` is called (the CLI exits).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal

from easerve.service.batcher import BatchingConfig, BatchObserver, DynamicBatcher
from easerve.service.repository import ModelRepository, ServedModel
from easerve.service.runners.base import Runner, RunnerFactory
from easerve.service.runners.selection import warm_up
from easerve.service.settings import Settings

logger = logging.getLogger(__name__)

Phase = Literal["loading", "ready", "failed", "draining", "stopped"]


class ServiceLifecycle:
    def __init__(
        self,
        repository: ModelRepository,
        runner_factory: RunnerFactory,
        settings: Settings,
        observer: BatchObserver,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.repository = repository
        self.phase: Phase = "loading"
        self.error: str | None = None
        self._runner_factory = runner_factory
        self._settings = settings
        self._observer = observer
        self._on_failure = on_failure
        self._loading: asyncio.Task[None] | None = None
        self._draining: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.phase == "ready"

    def start_loading(self) -> None:
        """Load every model in the background (on the running loop)."""
        self._loading = asyncio.get_running_loop().create_task(self._load_all(), name="load-models")

    async def _load_all(self) -> None:
        for model in self.repository:
            try:
                await asyncio.to_thread(self._prepare_runners, model)
            except Exception as error:
                self._fail(model, error)
                return
            model.batcher = DynamicBatcher(
                model.name,
                [runner.run for runner in model.runners],
                BatchingConfig(
                    max_batch_size=model.max_batch_size,
                    max_queue_delay_s=self._settings.max_queue_delay_ms / 1000.0,
                    max_queue_size=self._settings.max_queue_size,
                ),
                self._observer,
            )
            model.batcher.start()
            model.state = "ready"
        if self.phase == "loading":
            self.phase = "ready"
            logger.info("ready: %d model(s) loaded and warmed up", len(self.repository))

    def _prepare_runners(self, model: ServedModel) -> None:
        """One warmed-up runner per instance in `model.runners`; on a failure none is kept."""
        model.files.verify()
        runners: list[Runner] = []
        try:
            for _ in range(self._settings.instances):
                runners.append(self._runner_factory(model.files, model.max_batch_size))
                warm_up(runners[-1], model.files, model.max_batch_size)
        except Exception:
            for runner in runners:
                runner.close()
            raise
        model.runners = runners
        logger.info(
            "%s: %d instance(s) loaded on %s, warmed up at batch 1 and %d",
            model.name,
            len(runners),
            runners[0].backend,
            model.max_batch_size,
        )

    def _fail(self, model: ServedModel, error: Exception) -> None:
        model.state = "failed"
        model.error = str(error) or type(error).__name__
        self.phase = "failed"
        self.error = f"{model.name} failed to load: {model.error}"
        logger.error("%s", self.error, exc_info=error)
        if self._on_failure is not None:
            self._on_failure(self.error)

    async def drain(self) -> None:
        """Stop accepting (not ready any more) and finish everything queued; idempotent."""
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain_all(), name="drain")
        await self._draining

    async def _drain_all(self) -> None:
        if self.phase != "failed":
            self.phase = "draining"
        logger.info("draining: no new requests; finishing what is queued")
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
