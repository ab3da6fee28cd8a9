"""`create_app(settings)`: the FastAPI application, its routes and its lifespan.

Lifespan: models load and warm up in the background (`/healthz` live at once, `/readyz` 200 when
all are ready); at shutdown every queue is drained, then runners and threads are released.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

import easerve
from easerve.service.admission import MB, WorkerPools, memory_budget
from easerve.service.auth import ApiKeyMiddleware
from easerve.service.blas import one_blas_thread
from easerve.service.body_limit import BodySizeLimitMiddleware
from easerve.service.dependencies import route_tasks
from easerve.service.door import AdmissionDoor
from easerve.service.errors import install_error_handlers
from easerve.service.lifecycle import ServiceLifecycle
from easerve.service.memory import keep_large_blocks_mapped, release_free_memory
from easerve.service.metrics import RequestMetricsMiddleware, ServiceMetrics
from easerve.service.model_config import parse_overrides, served_model_files
from easerve.service.model_control import ModelControl, configured_model
from easerve.service.model_loading import ModelLoader, local_loader
from easerve.service.openapi import COMMON_ERRORS
from easerve.service.repository import ModelRepository
from easerve.service.routers import console, generation, health, instances, metrics, pointcloud, repository, v2, vision
from easerve.service.runners.base import RunnerFactory
from easerve.service.runners.selection import BackendChoice, backend_runners, choose_backend
from easerve.service.scheduler.device import DeviceScheduler
from easerve.service.settings import Settings
from easerve.service.state import ServiceState

logger = logging.getLogger(__name__)

ROUTERS = (
    health.router,
    vision.router,
    instances.router,
    generation.router,
    pointcloud.router,
    v2.router,
    repository.router,
    metrics.router,
    console.router,
)


def create_app(
    settings: Settings,
    runner_factory: RunnerFactory | None = None,
    on_load_failure: Callable[[str], None] | None = None,
    model_loader: Callable[[ModelRepository, ServiceMetrics], ModelLoader] | None = None,
    metrics: ServiceMetrics | None = None,
    model_control: Callable[[ModelRepository, Settings, ModelLoader], ModelControl] = ModelControl,
) -> FastAPI:
    """The service for `settings`. ModelFilesError when no model (or a named one) is found,
    ModelConfigError for an invalid per-model setting.

    `runner_factory` replaces the backend's runners (tests use slow fakes); `on_load_failure`
    is called with the reason if a model fails to load (the CLI stops the server);
    `model_loader` makes the loader of the models' batchers (default: runners built in this
    process, `model_loading.local_loader`; the Ray Serve ingress connects to its deployments);
    `metrics` is what records and renders them (default: a registry of this app's own);
    `model_control` makes what loads and unloads models at run time (an HTTP worker of
    `--http-workers` asks its model process).
    """
    found = served_model_files(settings, parse_overrides(settings.model_overrides))
    if runner_factory is None:
        choice = choose_backend(settings.backend)
        runner_factory = backend_runners(settings, choice)
    else:
        choice = BackendChoice("custom", "a runner factory was passed to create_app")
    repository = ModelRepository([configured_model(files, settings) for files in found])
    scheduler = DeviceScheduler.from_settings(settings)
    service_metrics = metrics if metrics is not None else ServiceMetrics()
    service_metrics.watch(scheduler)
    if model_loader is None:
        loader = local_loader(runner_factory, service_metrics, scheduler, int(settings.server_memory_mb * MB))
    else:
        loader = model_loader(repository, service_metrics)
    lifecycle = ServiceLifecycle(repository, loader, settings, on_load_failure)
    pools = WorkerPools.from_settings(settings)
    budget = memory_budget(settings, pools, release_free_memory)
    control = model_control(repository, settings, loader)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logger.info("backend %s: %s", choice.backend, choice.reason)
        logger.info("serving %s", ", ".join(model.name for model in repository))
        keep_large_blocks_mapped()
        one_blas_thread()
        lifecycle.start_loading()
        polling = (
            asyncio.get_running_loop().create_task(control.poll_forever()) if settings.model_control == "poll" else None
        )
        try:
            yield
        finally:
            if polling is not None:
                polling.cancel()
            await lifecycle.close()
            scheduler.close()
            pools.shutdown()

    app = FastAPI(
        title="easerve",
        version=easerve.__version__,
        description="External Attention vision models (and their self-attention twins), batched.",
        lifespan=lifespan,
        responses=COMMON_ERRORS,
        # The service's own metrics are Prometheus'; FastAPI's native OpenTelemetry would look
        # up the global tracer and meter providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = ServiceState(
        settings, repository, lifecycle, service_metrics, pools, budget, choice, control, scheduler
    )
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes, body_timeout_s=settings.body_timeout_s
    )
    # Outside the body limit and the routes: a request refused here costs no body and no routing.
    app.add_middleware(AdmissionDoor, state=app.state.service, route_tasks=route_tasks(ROUTERS))
    if settings.api_key is not None:
        # Added after the body limit, so it runs before it: a request without the key is
        # refused before a byte of its body is read.
        app.add_middleware(
            ApiKeyMiddleware, api_key=settings.api_key.get_secret_value(), protect_metadata=settings.protect_metadata
        )
    app.add_middleware(RequestMetricsMiddleware, metrics=service_metrics)
    for router in ROUTERS:
        app.include_router(router)
    return app
