"""FastAPI dependencies: the shared service state, the model a request uses and its context."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, ParamSpec, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.routing import APIRoute

from easerve.artifacts.manifest import AttentionKind
from easerve.artifacts.tasks import TaskSpec
from easerve.service.auth import DOCUMENTED_SCHEMES
from easerve.service.contract import InputLimits
from easerve.service.deadline import Deadline
from easerve.service.door import ADMISSION_STATE_KEY, MAX_TIMEOUT_S, MIN_TIMEOUT_S, Admission
from easerve.service.errors import Unavailable
from easerve.service.inference import InferenceContext
from easerve.service.metrics import MODEL_STATE_KEY
from easerve.service.repository import ServedModel
from easerve.service.state import ServiceState

# The key itself is checked by `auth.ApiKeyMiddleware` before the body is read; these only
# put the security schemes in the OpenAPI document: as dependencies on the control routes (which
# also registers the schemes), as the operation's own `security` on the inference routes (a
# dependency runs on every request).
API_KEY_SECURITY = [Depends(scheme) for scheme in DOCUMENTED_SCHEMES]
API_KEY_OPENAPI = {"security": [{scheme.scheme_name: []} for scheme in DOCUMENTED_SCHEMES]}


async def service_state(request: Request) -> ServiceState:
    # async: FastAPI runs a plain `def` dependency on its thread pool, a thread hop per request.
    return request.app.state.service


State = Annotated[ServiceState, Depends(service_state)]


def inference_context(
    request: Request, state: ServiceState, model: ServedModel, timeout_s: float | None, max_batch_items: int
) -> InferenceContext:
    """The context of an inference request on `model` (Unavailable while draining). Marks the
    request with the model for the metrics middleware. The caller holds the request inside
    `async with context:` (v1 routes through `finishes_inference`): a drain waits for every
    request held to finish before its batchers stop accepting."""
    if state.lifecycle.phase == "draining":
        raise Unavailable("the server is shutting down")
    setattr(request.state, MODEL_STATE_KEY, model.name)
    admission: Admission | None = getattr(request.state, ADMISSION_STATE_KEY, None)
    if admission is not None and admission.model != model.name:
        admission = None
    now = admission.arrived if admission is not None else time.perf_counter()
    settings = state.settings
    timeout = timeout_s if timeout_s is not None else model.serving.default_timeout_s
    limits = InputLimits(
        max_batch_items=max_batch_items,
        max_model_pixels=settings.max_model_pixels,
        max_model_points=settings.max_model_points,
    )
    return InferenceContext(
        model,
        now,
        Deadline(now + timeout),
        state.pools,
        state.budget,
        limits,
        on_begin=state.lifecycle.request_started,
        on_finish=state.lifecycle.request_finished,
        arrival=admission.arrival if admission is not None else None,
        client_gone=functools.partial(_until_disconnected, request),
    )


async def _until_disconnected(request: Request) -> None:
    """Returns once the client has closed the connection; called after the body was read, when
    all `receive` can still bring is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


TimeoutQuery = Annotated[
    float | None,
    Query(
        ge=MIN_TIMEOUT_S,
        le=MAX_TIMEOUT_S,
        description="seconds this request may take before it is answered 504 (default: the server's)",
    ),
]


def task_inference(task: TaskSpec) -> Callable[..., Awaitable[InferenceContext]]:
    """The dependency of a task endpoint: picks the model from `model=` or `attention=` and
    makes the request's context; the handler is wrapped in `finishes_inference`, which begins
    and finishes it, so a request refused for its other parameters never holds a drain up. (A
    plain dependency: FastAPI's generator dependencies cost an exit stack and a cancel scope
    per request.)"""

    async def dependency(
        request: Request,
        state: State,
        model: Annotated[
            str | None, Query(description="model name; default: the task's model with `attention`")
        ] = None,
        attention: Annotated[AttentionKind | None, Query(description="ea or sa (default ea)")] = None,
        timeout: TimeoutQuery = None,
    ) -> InferenceContext:
        served = state.repository.for_task(task.name, model, attention)
        return inference_context(request, state, served, timeout, state.settings.max_images_per_request)

    dependency.task = task.name  # type: ignore[attr-defined]  # found by `route_tasks`
    return dependency


def route_tasks(routers: Iterable[APIRouter]) -> dict[str, str]:
    """The path of every task route of `routers` and its task (the `task_inference` dependency
    it declares), for the admission door."""
    tasks = {}
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute):
                continue
            for dependency in route.dependant.dependencies:
                task = getattr(dependency.call, "task", None)
                if task is not None:
                    tasks[route.path] = task
    return tasks


P = ParamSpec("P")
R = TypeVar("R")


def finishes_inference(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """`handler` (which takes its `InferenceContext` as `context=`) inside `async with context`:
    when it returns or raises, the request's cost goes back to the budget and a drain may go on."""

    @functools.wraps(handler)
    async def finishing(*args: P.args, **kwargs: P.kwargs) -> R:
        async with kwargs["context"]:
            return await handler(*args, **kwargs)

    return finishing
