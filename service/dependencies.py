"""FastAPI dependencies: the shared service state, the API key check, the model a request uses."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Query, Request

from easerve.artifacts.manifest import AttentionKind, Task
from easerve.service.errors import Unauthorized, Unavailable
from easerve.service.inference import InferenceContext
from easerve.service.metrics import MODEL_STATE_KEY
from easerve.service.repository import ServedModel
from easerve.service.state import ServiceState

API_KEY_HEADER = "x-api-key"


async def service_state(request: Request) -> ServiceState:
    # async: FastAPI runs a plain `def` dependency on its thread pool, a thread hop per request.
    return request.app.state.service


State = Annotated[ServiceState, Depends(service_state)]


def _presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return request.headers.get(API_KEY_HEADER)


async def require_api_key(request: Request, state: State) -> None:
    """With `api_key` set, the request must carry it (`Authorization: Bearer <key>` or
    `X-API-Key: <key>`); Unauthorized otherwise."""
    if state.settings.api_key is None:
        return
    presented = _presented_key(request)
    expected = state.settings.api_key.get_secret_value()
    if presented is None or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Unauthorized("missing or wrong API key (send Authorization: Bearer <key> or X-API-Key)")


def start_inference(
    request: Request, state: ServiceState, model: ServedModel, timeout_s: float | None
) -> InferenceContext:
    """The context of an inference request on `model` (Unavailable while draining). Marks the
    request with the model for the metrics middleware."""
    if state.lifecycle.phase == "draining":
        raise Unavailable("the server is shutting down")
    setattr(request.state, MODEL_STATE_KEY, model.name)
    now = time.perf_counter()
    timeout = timeout_s if timeout_s is not None else state.settings.default_timeout_s
    return InferenceContext(model=model, started=now, deadline=now + timeout, workers=state.workers)


TimeoutQuery = Annotated[
    float | None,
    Query(gt=0, le=3600, description="seconds this request may take before it is answered 504 (default: the server's)"),
]


def task_inference(task: Task) -> Callable[..., Awaitable[InferenceContext]]:
    """The dependency of a task endpoint: picks the model from `model=` or `attention=`."""

    async def dependency(
        request: Request,
        state: State,
        model: Annotated[
            str | None, Query(description="model name; default: the task's model with `attention`")
        ] = None,
        attention: Annotated[AttentionKind | None, Query(description="ea or sa (default ea)")] = None,
        timeout: TimeoutQuery = None,
    ) -> InferenceContext:
        served = state.repository.for_task(task, model, attention)
        return start_inference(request, state, served, timeout)

    return dependency
