"""Prometheus metrics, named after Triton's where Triton has one.

Counters (prometheus_client exposes them with a `_total` suffix):
  nv_inference_request_success{model}, nv_inference_request_failure{model,reason},
  nv_inference_count{model} (items inferred) and nv_inference_exec_count{model} (batches run):
  their ratio is the mean batch size; nv_inference_request_duration_us,
  nv_inference_queue_duration_us and nv_inference_compute_infer_duration_us{model}: cumulative
  microseconds, as in Triton; easerve_http_requests{model,code}.
Gauge: nv_inference_pending_request_count{model} (queue depth).
Histograms: easerve_request_duration_seconds, easerve_queue_duration_seconds,
  easerve_compute_duration_seconds (per batch), easerve_batch_size{model},
  easerve_latency_model_error_ratio{model} (|predicted - measured| / measured, per batch).
The device scheduler's (`watch_scheduler`): easerve_device_busy_seconds (slot-seconds computing),
  easerve_scheduler_decision_seconds (its own overhead), easerve_scheduler_refused_at_door and
  easerve_scheduler_dropped (requests refused before their body was read, and queued requests
  answered 504 as unreachable; also in nv_inference_request_failure by reason),
  easerve_scheduler_probes (runs measuring a model whose predictions were refusing its requests).

Each app owns its registry, so several apps (tests) never collide. Names, help texts and buckets
live in one table (`MetricSpec`s below) that every host builds from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from easerve.service.scheduler.device import DeviceScheduler

MODEL_STATE_KEY = "model"  # request.state.model: set by the routes, read by the middleware
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_US = 1e6


@dataclass(frozen=True)
class MetricSpec:
    name: str
    help: str
    kind: Literal["counter", "gauge", "histogram"]
    labels: tuple[str, ...] = ("model",)
    buckets: tuple[float, ...] = ()


# The one table of metric names, help texts and buckets: every host (this process, each
# `--http-workers` process, each Ray replica) builds its metrics from it.
SUCCESS = MetricSpec("nv_inference_request_success", "Successful inference requests", "counter")
FAILURE = MetricSpec(
    "nv_inference_request_failure", "Failed inference requests by reason", "counter", ("model", "reason")
)
INFERENCE_COUNT = MetricSpec("nv_inference_count", "Items (images, clouds) inferred", "counter")
EXEC_COUNT = MetricSpec("nv_inference_exec_count", "Batches executed", "counter")
REQUEST_US = MetricSpec("nv_inference_request_duration_us", "Cumulative end-to-end request time (us)", "counter")
QUEUE_US = MetricSpec("nv_inference_queue_duration_us", "Cumulative queue time (us)", "counter")
COMPUTE_US = MetricSpec("nv_inference_compute_infer_duration_us", "Cumulative compute time per request (us)", "counter")
PENDING = MetricSpec("nv_inference_pending_request_count", "Requests waiting in the queue", "gauge")
HTTP_REQUESTS = MetricSpec(
    "easerve_http_requests", "Inference HTTP requests by model and status code", "counter", ("model", "code")
)
REQUEST_SECONDS = MetricSpec(
    "easerve_request_duration_seconds", "End-to-end request time", "histogram", buckets=_LATENCY_BUCKETS
)
QUEUE_SECONDS = MetricSpec(
    "easerve_queue_duration_seconds", "Time queued before compute", "histogram", buckets=_LATENCY_BUCKETS
)
COMPUTE_SECONDS = MetricSpec(
    "easerve_compute_duration_seconds", "Compute time per batch", "histogram", buckets=_LATENCY_BUCKETS
)
BATCH_SIZE = MetricSpec(
    "easerve_batch_size", "Items per executed batch", "histogram", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
LATENCY_ERROR = MetricSpec(
    "easerve_latency_model_error_ratio",
    "Relative error of the latency model's prediction of each batch's compute time",
    "histogram",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
)
REPLICA_ANSWERS = MetricSpec(
    "easerve_ray_model_replica_requests",
    "Inference requests answered, by the model replica (and Ray node) that answered",
    "counter",
    ("model", "model_replica", "node"),
)
REPLICA_RETRIES = MetricSpec(
    "easerve_ray_retries", "Requests sent again to another replica after theirs was lost", "counter"
)


class Recorder(Protocol):
    """One metric of the table, in some metric system; `labels` in the spec's order."""

    def add(self, value: float, *labels: str) -> None: ...

    def set(self, value: float, *labels: str) -> None: ...

    def observe(self, value: float, *labels: str) -> None: ...


class PrometheusRecorder:
    """A metric of the table in a prometheus_client registry."""

    def __init__(self, spec: MetricSpec, registry: CollectorRegistry) -> None:
        labels = list(spec.labels)
        if spec.kind == "histogram":
            self._metric: Any = Histogram(spec.name, spec.help, labels, buckets=spec.buckets, registry=registry)
        elif spec.kind == "gauge":
            # livesum: under `--http-workers` (prometheus_client's multiprocess mode) the live
            # processes' values add up; ignored in one process.
            self._metric = Gauge(spec.name, spec.help, labels, registry=registry, multiprocess_mode="livesum")
        else:
            self._metric = Counter(spec.name, spec.help, labels, registry=registry)

    def add(self, value: float, *labels: str) -> None:
        self._metric.labels(*labels).inc(value)

    def set(self, value: float, *labels: str) -> None:
        self._metric.labels(*labels).set(value)

    def observe(self, value: float, *labels: str) -> None:
        self._metric.labels(*labels).observe(value)


class BatchMetrics:
    """The batcher's metrics (its `BatchObserver`), each recorded by what `make` builds."""

    def __init__(self, make: Callable[[MetricSpec], Recorder]) -> None:
        self.success = make(SUCCESS)
        self.failure = make(FAILURE)
        self.inference_count = make(INFERENCE_COUNT)
        self.exec_count = make(EXEC_COUNT)
        self.queue_us = make(QUEUE_US)
        self.compute_us = make(COMPUTE_US)
        self.pending = make(PENDING)
        self.queue_seconds = make(QUEUE_SECONDS)
        self.compute_seconds = make(COMPUTE_SECONDS)
        self.batch_size = make(BATCH_SIZE)
        self.latency_error = make(LATENCY_ERROR)

    def queue_depth_changed(self, model: str, depth: int) -> None:
        self.pending.set(depth, model)

    def batch_executed(self, model: str, batch_size: int, compute_s: float, predicted_s: float) -> None:
        self.inference_count.add(batch_size, model)
        self.exec_count.add(1, model)
        self.batch_size.observe(batch_size, model)
        self.compute_seconds.observe(compute_s, model)
        if predicted_s > 0 and compute_s > 0:
            self.latency_error.observe(abs(predicted_s - compute_s) / compute_s, model)

    def request_succeeded(self, model: str, queue_s: float, compute_s: float) -> None:
        self.success.add(1, model)
        self.queue_us.add(queue_s * _US, model)
        self.compute_us.add(compute_s * _US, model)
        self.queue_seconds.observe(queue_s, model)

    def request_failed(self, model: str, reason: str) -> None:
        self.failure.add(1, model, reason)


class ServiceMetrics(BatchMetrics):
    """The service's metrics in `registry`, and the HTTP ones; `/metrics` renders `exposed`
    (default: the registry itself; under `--http-workers` every process's samples, on Ray the
    ingress replica's labelled ones)."""

    def __init__(self, registry: CollectorRegistry | None = None, exposed: Collector | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._exposed = exposed if exposed is not None else self.registry
        super().__init__(lambda spec: PrometheusRecorder(spec, self.registry))
        self.request_us = PrometheusRecorder(REQUEST_US, self.registry)
        self.http_requests = PrometheusRecorder(HTTP_REQUESTS, self.registry)
        self.request_seconds = PrometheusRecorder(REQUEST_SECONDS, self.registry)

    def watch(self, scheduler: DeviceScheduler) -> None:
        """The device scheduler's counters, read at each scrape."""
        stats = scheduler.stats
        for name, help_text, read in (
            ("easerve_device_busy_seconds", "Slot-seconds the device spent computing", lambda: stats.busy_s),
            (
                "easerve_scheduler_decision_seconds",
                "Time the device scheduler spent deciding",
                lambda: stats.decision_s,
            ),
            (
                "easerve_scheduler_refused_at_door",
                "Requests refused before their body was read",
                lambda: stats.refused_at_door,
            ),
            ("easerve_scheduler_dropped", "Queued requests answered 504 as unreachable", lambda: stats.dropped),
            (
                "easerve_scheduler_probes",
                "Runs that measured a model whose predicted time was refusing its requests",
                lambda: stats.probes,
            ),
        ):
            Gauge(name, help_text, registry=self.registry).set_function(read)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self._exposed)  # type: ignore[arg-type]

    def http_request_finished(self, model: str, status_code: int, duration_s: float) -> None:
        self.http_requests.add(1, model, str(status_code))
        if status_code < 400:
            self.request_us.add(duration_s * _US, model)
            self.request_seconds.observe(duration_s, model)


class RequestMetricsMiddleware:
    """Counts every request that selected a model (by status code) and times the successful
    ones end to end, from the first byte in to the last byte out."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            model = state.get(MODEL_STATE_KEY)
            if model is not None:
                self.metrics.http_request_finished(model, status, time.perf_counter() - started)
