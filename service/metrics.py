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
  answered 504 as unreachable; also in nv_inference_request_failure by reason).

Each app owns its registry, so several apps (tests) never collide.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from easerve.service.scheduler.device import DeviceScheduler

MODEL_STATE_KEY = "model"  # request.state.model: set by the routes, read by the middleware
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_ERROR_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
_US = 1e6


class ServiceMetrics:
    """The service's metrics; implements the batcher's `BatchObserver`."""

    def __init__(self, scheduler: DeviceScheduler | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        if scheduler is not None:
            self._watch(scheduler)
        self.success = Counter("nv_inference_request_success", "Successful inference requests", ["model"], registry=r)
        self.failure = Counter(
            "nv_inference_request_failure", "Failed inference requests by reason", ["model", "reason"], registry=r
        )
        self.inference_count = Counter("nv_inference_count", "Items (images, clouds) inferred", ["model"], registry=r)
        self.exec_count = Counter("nv_inference_exec_count", "Batches executed", ["model"], registry=r)
        self.request_us = Counter(
            "nv_inference_request_duration_us", "Cumulative end-to-end request time (us)", ["model"], registry=r
        )
        self.queue_us = Counter("nv_inference_queue_duration_us", "Cumulative queue time (us)", ["model"], registry=r)
        self.compute_us = Counter(
            "nv_inference_compute_infer_duration_us", "Cumulative compute time per request (us)", ["model"], registry=r
        )
        # livesum: under `--http-workers` (prometheus_client's multiprocess mode) the live
        # processes' values add up; ignored in one process.
        self.pending = Gauge(
            "nv_inference_pending_request_count",
            "Requests waiting in the queue",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.http_requests = Counter(
            "easerve_http_requests", "Inference HTTP requests by model and status code", ["model", "code"], registry=r
        )
        self.request_seconds = Histogram(
            "easerve_request_duration_seconds",
            "End-to-end request time",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "easerve_queue_duration_seconds",
            "Time queued before compute",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_seconds = Histogram(
            "easerve_compute_duration_seconds",
            "Compute time per batch",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "easerve_batch_size", "Items per executed batch", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.latency_error = Histogram(
            "easerve_latency_model_error_ratio",
            "Relative error of the latency model's prediction of each batch's compute time",
            ["model"],
            buckets=_ERROR_BUCKETS,
            registry=r,
        )

    def _watch(self, scheduler: DeviceScheduler) -> None:
        stats, r = scheduler.stats, self.registry
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
        ):
            Gauge(name, help_text, registry=r).set_function(read)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    # BatchObserver
    def queue_depth_changed(self, model: str, depth: int) -> None:
        self.pending.labels(model).set(depth)

    def batch_executed(self, model: str, batch_size: int, compute_s: float, predicted_s: float) -> None:
        self.inference_count.labels(model).inc(batch_size)
        self.exec_count.labels(model).inc()
        self.batch_size.labels(model).observe(batch_size)
        self.compute_seconds.labels(model).observe(compute_s)
        if predicted_s > 0 and compute_s > 0:
            self.latency_error.labels(model).observe(abs(predicted_s - compute_s) / compute_s)

    def request_succeeded(self, model: str, queue_s: float, compute_s: float) -> None:
        self.success.labels(model).inc()
        self.queue_us.labels(model).inc(queue_s * _US)
        self.compute_us.labels(model).inc(compute_s * _US)
        self.queue_seconds.labels(model).observe(queue_s)

    def request_failed(self, model: str, reason: str) -> None:
        self.failure.labels(model, reason).inc()

    def http_request_finished(self, model: str, status_code: int, duration_s: float) -> None:
        self.http_requests.labels(model, str(status_code)).inc()
        if status_code < 400:
            self.request_us.labels(model).inc(duration_s * _US)
            self.request_seconds.labels(model).observe(duration_s)


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
