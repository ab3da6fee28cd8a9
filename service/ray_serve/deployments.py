"""The two kinds of deployment of the Ray Serve application, and the remote batcher between them.

`Ingress` (one deployment, any number of replicas) runs easerve's own FastAPI app
(`service.app.create_app`): every route, the API key, body limits, decoding, validation against
the model's contract, memory budget and answers, in each ingress replica. Only the model's
batcher is replaced: a `RemoteBatcher` that sends the batch-first input tensors to the model's
deployment and maps Ray's failures to the service's errors.

`ModelReplica` (one deployment per served model) holds what one process of `easerve serve` holds
for that model: its warmed-up runners (`prepare_runners`) and easerve's `DynamicBatcher`
(`new_batcher`) with the model's serving configuration, so batching keeps its guarantees in
every replica: a lone request runs at once, a deadline fires while the request is queued, a full
queue answers 429 with Retry-After. Requests from every ingress replica meet in its queue.

Deadlines cross processes as a remaining budget in seconds (each process's `perf_counter` is its
own); the ingress also stops waiting at the deadline (a request can wait in Ray's queues before
it reaches a replica) and cancels the remote call. Tensors travel as numpy arrays: Ray puts large
ones in its shared-memory object store and the receiver maps them without a copy.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import ray
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve import metrics as ray_metrics
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from easerve.service.admission import MB
from easerve.service.app import create_app
from easerve.service.batcher import BatchOutcome, DynamicBatcher, Finish, StandInBatcher, Tensors, batch_items
from easerve.service.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    QueueFull,
    ServiceError,
    Unavailable,
    error_from_wire,
    error_to_wire,
)
from easerve.service.metrics import (
    REPLICA_ANSWERS,
    REPLICA_RETRIES,
    BatchMetrics,
    MetricSpec,
    PrometheusRecorder,
    ServiceMetrics,
)
from easerve.service.model_control import configured_model
from easerve.service.model_files import ModelFiles, discover_models
from easerve.service.model_loading import ModelLoader, local_loader
from easerve.service.repository import ModelRepository, ServedModel
from easerve.service.runners.base import Runner
from easerve.service.runners.selection import BackendChoice, backend_runners, choose_backend
from easerve.service.scheduler.device import DeviceScheduler
from easerve.service.settings import Settings

from .config import service_settings, settings_from_args

logger = logging.getLogger(__name__)

# A replica that died (killed, its node lost) while holding a request: the request is sent again,
# to another replica, at most this many times while its deadline allows; then 503.
MAX_RETRIES = 2
RETRY_PAUSE_S = 0.05
REPLICA_HEADER = "x-easerve-replica"  # which model replica computed the answer
NODE_HEADER = "x-easerve-node"  # and on which Ray node

# What a request's handler learns about where it was computed, for the response headers.
_ANSWERED_BY: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "easerve_answered_by", default=None
)


def _replica_identity() -> tuple[str, str]:
    """(this replica's id, its node's id), or the process id and "" outside a replica."""
    try:
        replica = serve.get_replica_context().replica_id
        name = f"{replica.deployment_id.name}#{replica.unique_id}"
    except Exception:  # not in a Serve replica (a test calling the class directly)
        name = f"pid-{os.getpid()}"
    return name, ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


# -- the model deployment ------------------------------------------------------------------------


class RayRecorder:
    """A metric of `service.metrics`' table as a Ray metric (Ray's exporter adds its `ray_`
    prefix, and Ray Serve its `deployment`, `replica` and `application` tags); scraped from every
    node's Ray metrics port."""

    def __init__(self, spec: MetricSpec) -> None:
        self._labels = spec.labels
        if spec.kind == "histogram":
            self._metric: Any = ray_metrics.Histogram(spec.name, spec.help, list(spec.buckets), spec.labels)
        elif spec.kind == "gauge":
            self._metric = ray_metrics.Gauge(spec.name, spec.help, spec.labels)
        else:
            self._metric = ray_metrics.Counter(spec.name, spec.help, spec.labels)

    def _tags(self, labels: tuple[str, ...]) -> dict[str, str]:
        return dict(zip(self._labels, labels, strict=True))

    def add(self, value: float, *labels: str) -> None:
        self._metric.inc(value, self._tags(labels))

    def set(self, value: float, *labels: str) -> None:
        self._metric.set(value, self._tags(labels))

    def observe(self, value: float, *labels: str) -> None:
        self._metric.observe(value, self._tags(labels))


class ModelReplica:
    """One replica of one model's deployment: its runners and its dynamic batcher."""

    async def __init__(self, settings: dict[str, Any], model: str) -> None:
        self._settings = settings_from_args(settings)
        logging.getLogger("easerve").setLevel(self._settings.log_level.upper())
        service = service_settings(self._settings)
        (files,) = discover_models(service.weights_dirs, [model])
        self._model = configured_model(files, service)
        self._choice = choose_backend(service.backend)
        # Each replica is a process of its own with its own share of its node: a device
        # scheduler of its own, as `easerve serve` has one.
        load = local_loader(
            backend_runners(service, self._choice),
            BatchMetrics(RayRecorder),
            DeviceScheduler.from_settings(service),
            int(service.server_memory_mb * MB),
        )
        await load(self._model)
        assert isinstance(self._model.batcher, DynamicBatcher)
        self._batcher = self._model.batcher
        self._model.state = "ready"
        self._replica, self._node = _replica_identity()
        logger.info("%s: replica %s ready on node %s (%s)", model, self._replica, self._node, self._model.backend)

    async def describe(self) -> dict[str, Any]:
        """What the ingress shows in `/v1/models` and answers: backend, variant and why, and
        where this replica runs."""
        model = self._model
        return {
            "name": model.name,
            "version": model.version,
            "variant": model.files.variant_name,
            "variant_reason": model.variant_reason,
            "backend": model.backend,
            "backend_choice": [self._choice.backend, self._choice.reason],
            "replica": self._replica,
            "node": self._node,
            "pid": os.getpid(),
        }

    async def infer(self, inputs: Tensors, budget_s: float) -> dict[str, Any]:
        """Queue `inputs` (batch first, checked by the ingress) on this replica's batcher, with
        `budget_s` seconds left of the request's deadline. The service's errors come back as
        values (`error_to_wire`), not raised: they are answers, not failures of the replica."""
        deadline = time.perf_counter() + budget_s
        try:
            outcome = await self._batcher.submit(inputs, deadline)
        except ServiceError as error:
            return {"error": error_to_wire(error), "replica": self._replica, "node": self._node}
        except ValueError as error:  # batch_items: the ingress checks this first
            return {"error": error_to_wire(InvalidInput(str(error))), "replica": self._replica, "node": self._node}
        return {
            "outputs": outcome.outputs,
            "queue_s": outcome.queue_s,
            "compute_s": outcome.compute_s,
            "batch_size": outcome.batch_size,
            "replica": self._replica,
            "node": self._node,
        }

    def check_health(self) -> None:
        """Ray restarts a replica whose batcher has stopped (its scheduler failed)."""
        if not self._batcher.accepting and self._model.state == "ready":
            raise RuntimeError(f"the batcher of {self._model.name} stopped")

    async def __del__(self) -> None:
        """Ray stops this replica (scale-down, update, shutdown): answer everything queued."""
        model = getattr(self, "_model", None)
        if model is not None:
            await model.retire(self._settings.drain_timeout_s)


# -- the ingress ---------------------------------------------------------------------------------


class RemoteBatcher(StandInBatcher):
    """Stands in for a model's `DynamicBatcher` in an ingress replica: `submit` sends the inputs
    to a replica of the model's deployment (whose own batcher queues, batches and computes them)
    and answers as the local batcher would, with the same errors:

    - the replica's own answers: outputs, 429 + Retry-After (its queue is full), 504 (the deadline
      fired while queued or computing), 422 / 500 for a request that fails alone;
    - every replica's queue full at once (Ray's `max_queued_requests` at this caller): 429;
    - the replica died with the request: sent again to another one (at most `MAX_RETRIES` times,
      within the deadline), else 503 + Retry-After;
    - the deadline passes while the request waits anywhere: 504, and the remote call is cancelled.
    """

    def __init__(self, model: str, handle: DeploymentHandle, metrics: ServiceMetrics, ray: IngressMetrics) -> None:
        super().__init__(model)
        self._infer = handle.options(method_name="infer")
        self._metrics = metrics
        self._ray = ray

    async def submit(self, inputs: Tensors, deadline: float, finish: Finish | None = None) -> BatchOutcome:
        """The outputs computed by the model's deployment; `finish` makes the answer here (on
        the event loop only when it is light, else on a thread)."""
        with self._outstanding():
            self._metrics.queue_depth_changed(self.model, self.queue_depth)
            try:
                outcome = await self._submit(inputs, deadline)
                return await self._answered(outcome, finish, on_the_loop=finish is not None and finish.light)
            except ServiceError as error:
                self._metrics.request_failed(self.model, error.reason)
                raise
            finally:
                self._metrics.queue_depth_changed(self.model, self.queue_depth - 1)

    async def _submit(self, inputs: Tensors, deadline: float) -> BatchOutcome:
        items = batch_items(inputs)
        retries = 0
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise DeadlineExceeded(f"the deadline passed before a replica of {self.model} answered")
            try:
                answer = await self._call(inputs, remaining)
            except _ReplicaLost as lost:
                retries += 1
                if retries > MAX_RETRIES or deadline - time.perf_counter() <= RETRY_PAUSE_S:
                    raise Unavailable(
                        f"the replica of {self.model} computing this request was lost ({lost}); retry shortly"
                    ) from None
                logger.warning("%s: a replica was lost with a request (%s); sending it again", self.model, lost)
                self._ray.retries.add(1, self.model)
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            break
        replica, node = answer["replica"], answer["node"]
        self._ray.answers.add(1, self.model, replica, node)
        answered_by = _ANSWERED_BY.get()
        if answered_by is not None:
            answered_by.append((replica, node))
        if "error" in answer:
            raise error_from_wire(answer["error"])
        queue_s, compute_s, batch_size = answer["queue_s"], answer["compute_s"], answer["batch_size"]
        self._metrics.request_succeeded(self.model, queue_s, compute_s)
        # Items, and this request's share of its batch: summed over every ingress replica, the
        # batches the model executed (so nv_inference_count / nv_inference_exec_count is still the
        # mean batch size).
        self._metrics.inference_count.add(items, self.model)
        self._metrics.exec_count.add(items / max(batch_size, items), self.model)
        return BatchOutcome(answer["outputs"], queue_s, compute_s, batch_size)

    async def _call(self, inputs: Tensors, remaining_s: float) -> dict[str, Any]:
        response = None
        try:
            response = self._infer.remote(inputs, remaining_s)
            return await asyncio.wait_for(_result(response), remaining_s)
        except TimeoutError:
            response.cancel()
            raise DeadlineExceeded(f"deadline exceeded while waiting for a replica of {self.model}") from None
        except asyncio.CancelledError:
            if response is not None:
                response.cancel()
            raise
        except BackPressureError as error:
            raise QueueFull(
                f"every replica of {self.model} is full ({error}); retry later", error.retry_after_s or 1.0
            ) from None
        except (RayActorError, ReplicaUnavailableError) as error:
            raise _ReplicaLost(type(error).__name__) from None
        except DeploymentUnavailableError as error:
            raise Unavailable(f"model {self.model} is unavailable: {error.message}") from None
        except RayTaskError as error:
            logger.error("%s: a replica failed", self.model, exc_info=error)
            raise InferenceFailed(f"inference failed on {self.model}: {type(error.cause).__name__}") from None


class _ReplicaLost(Exception):
    pass


@dataclass(frozen=True)
class IngressMetrics:
    """The ingress's own metrics about the model replicas, beside the service's."""

    answers: PrometheusRecorder  # {model, model_replica, node}: which replica answered
    retries: PrometheusRecorder  # {model}: requests sent again after their replica was lost

    @classmethod
    def register(cls, registry: CollectorRegistry) -> IngressMetrics:
        return cls(PrometheusRecorder(REPLICA_ANSWERS, registry), PrometheusRecorder(REPLICA_RETRIES, registry))


async def _result(response: Any) -> Any:
    return await response


class AnsweredByMiddleware:
    """Says which model replica (and Ray node) computed an inference answer, in the
    `X-Easerve-Replica` and `X-Easerve-Node` response headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answered_by: list[tuple[str, str]] = []
        token = _ANSWERED_BY.set(answered_by)

        async def send_with_replica(message: Message) -> None:
            if message["type"] == "http.response.start" and answered_by:
                replica, node = answered_by[-1]
                headers = list(message.get("headers", []))
                headers += [(REPLICA_HEADER.encode(), replica.encode()), (NODE_HEADER.encode(), node.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_replica)
        finally:
            _ANSWERED_BY.reset(token)


class ReplicaLabelledRegistry:
    """A registry's metrics with a `replica` label added to every sample (which ingress replica
    answered this scrape)."""

    def __init__(self, inner: Any, replica: str) -> None:
        self._inner = inner
        self._replica = replica

    def collect(self):
        for family in self._inner.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            labelled.samples = [
                sample._replace(labels={**sample.labels, "replica": self._replica}) for sample in family.samples
            ]
            yield labelled


def _no_local_runners(files: ModelFiles, max_batch_size: int) -> Runner:
    raise RuntimeError("the Ray ingress builds no runner: the model deployments compute")


def build_ingress_app(settings: Settings, handles: dict[str, DeploymentHandle]) -> FastAPI:
    """easerve's app (`create_app`) whose models are computed by their deployments (`handles`,
    by model name): loading a model connects it to its deployment, its batcher a `RemoteBatcher`."""
    replica, node = _replica_identity()
    app: FastAPI | None = None

    registry = CollectorRegistry()
    replicas = IngressMetrics.register(registry)
    metrics = ServiceMetrics(registry, exposed=ReplicaLabelledRegistry(registry, replica))

    def connecting_loader(repository: ModelRepository, metrics: ServiceMetrics) -> ModelLoader:

        async def connect(model: ServedModel) -> None:
            """Wait for a replica of the model's deployment and take what it serves (variant,
            backend) for `/v1/models` and the answers."""
            info = await handles[model.name].describe.remote()
            if info["version"] != model.version:
                logger.warning(
                    "%s: the replicas serve version %s, this ingress read %s",
                    model.name,
                    info["version"],
                    model.version,
                )
            model.files = model.files.with_variant(info["variant"])
            model.variant_reason = info["variant_reason"]
            model.backend_name = info["backend"]
            model.batcher = RemoteBatcher(model.name, handles[model.name], metrics, replicas)
            backend, reason = info["backend_choice"]
            if app is not None and app.state.service.backend.backend == "custom":
                choice = BackendChoice(backend, f"Ray Serve model replicas: {reason}")
                app.state.service = dataclasses.replace(app.state.service, backend=choice)

        return connect

    app = create_app(
        service_settings(settings), runner_factory=_no_local_runners, model_loader=connecting_loader, metrics=metrics
    )
    app.add_middleware(AnsweredByMiddleware)
    logger.info("ingress replica %s on node %s: %d model deployment(s)", replica, node, len(handles))
    return app


@serve.ingress()
class Ingress:
    """The ingress deployment: easerve's routes in every replica (see `build_ingress_app`)."""

    def __init__(self, settings: dict[str, Any], handles: dict[str, DeploymentHandle]) -> None:
        self._settings = settings_from_args(settings)
        self._handles = handles
        logging.getLogger("easerve").setLevel(self._settings.log_level.upper())

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_ingress_app(self._settings, self._handles)


ModelDeployment = serve.deployment(ModelReplica)
IngressDeployment = serve.deployment(Ingress)
