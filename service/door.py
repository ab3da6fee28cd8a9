"""`AdmissionDoor`: an inference request is admitted (or refused) from its request line alone,
before FastAPI routes it, parses its parameters or reads a byte of its body.

Past capacity most requests must be refused, so a refusal has to cost next to nothing: here it
is a path match, a query-string parse and the device scheduler's prediction, answered with a
small prebuilt JSON body (429 or 503 + Retry-After, counted by the metrics middleware around it).
An admitted request carries its `Admission` (the moment it arrived and its place among the work
on its way to the model's queue) to its route in the request's state; whatever the route does,
the place is given back when the request ends.

Which model a path uses is the routes' own knowledge: a task route is found by the
`task_inference` dependency it declares (`dependencies.route_tasks`), a v2 infer route by its
path. A request the door cannot resolve (unknown model, malformed parameters) goes on to its
route, which answers it as it always has.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import get_args
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from easerve.artifacts.manifest import AttentionKind
from easerve.service.batcher import Arrival
from easerve.service.errors import ServiceError
from easerve.service.metrics import MODEL_STATE_KEY
from easerve.service.repository import ServedModel
from easerve.service.state import ServiceState

ADMISSION_STATE_KEY = "admission"  # request.state.admission: set here, read by the route
# The bounds of a request's own `timeout` (the routes' `timeout=` and v2's `parameters.timeout`).
MIN_TIMEOUT_S = 0.01
MAX_TIMEOUT_S = 3600.0
_V2_INFER = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$")
_ATTENTION_KINDS: tuple[AttentionKind, ...] = get_args(AttentionKind)


@dataclass(frozen=True)
class Admission:
    """What the door decided for a request it let in."""

    model: str
    arrived: float  # time.perf_counter() when the door saw it
    arrival: Arrival


class AdmissionDoor:
    """ASGI middleware; `route_tasks` maps each task route's path to its task."""

    def __init__(self, app: ASGIApp, state: ServiceState, route_tasks: dict[str, str]) -> None:
        self.app = app
        self._state = state
        self._route_tasks = route_tasks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or self._state.lifecycle.phase != "ready":
            await self.app(scope, receive, send)
            return
        arrived = time.perf_counter()
        resolved = self._resolve(scope["path"], scope.get("query_string", b""))
        if resolved is None:
            await self.app(scope, receive, send)
            return
        model, timeout_s = resolved
        deadline = arrived + (timeout_s if timeout_s is not None else model.serving.default_timeout_s)
        state = scope.setdefault("state", {})
        state[MODEL_STATE_KEY] = model.name
        try:
            batcher = model.ready_batcher()
        except ServiceError:  # not ready: its route answers that, as it always has
            await self.app(scope, receive, send)
            return
        try:
            arrival = batcher.expect(deadline)
        except ServiceError as refusal:
            await _refuse(send, refusal)
            return
        try:
            await arrival.enter()
        except ServiceError as refusal:
            arrival.leave()
            await _refuse(send, refusal)
            return
        state[ADMISSION_STATE_KEY] = Admission(model.name, arrived, arrival)

        async def send_and_watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 200:
                    arrival.concluded(time.perf_counter() <= arrival.deadline)
                elif status == 504:  # dropped as unreachable, or its deadline passed
                    arrival.concluded(False)
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            arrival.leave()

    def _resolve(self, path: str, query_string: bytes) -> tuple[ServedModel, float | None] | None:
        """The model a request line names and its `timeout=`; None when the door cannot tell
        (the route decides, and answers what is wrong)."""
        try:
            query = dict(parse_qsl(query_string.decode("latin-1")))
            timeout_s = float(query["timeout"]) if "timeout" in query else None
            if timeout_s is not None and not MIN_TIMEOUT_S <= timeout_s <= MAX_TIMEOUT_S:
                return None
            task = self._route_tasks.get(path)
            repository = self._state.repository
            if task is not None:
                attention = query.get("attention")
                if attention is not None and attention not in _ATTENTION_KINDS:
                    return None
                return repository.for_task(task, query.get("model"), attention), timeout_s
            match = _V2_INFER.match(path)
            if match is None:
                return None
            model = repository.get(match["model"])
            version = match["version"]
            if version is not None and version != str(model.version):
                return None
            return model, None
        except (ValueError, ServiceError):
            return None


async def _refuse(send: Send, refusal: ServiceError) -> None:
    body = orjson.dumps({"error": refusal.message})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in refusal.headers().items()]
    await send({"type": "http.response.start", "status": refusal.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
