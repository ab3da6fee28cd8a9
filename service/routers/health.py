"""Liveness, readiness and what is served: `/healthz`, `/readyz`, `/v1/models`."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from easerve.artifacts.manifest import TensorInfo, Variant
from easerve.service.batcher import DynamicBatcher
from easerve.service.dependencies import State
from easerve.service.repository import ServedModel

router = APIRouter(tags=["health"])


class BatchingInfo(BaseModel):
    max_batch_size: int
    preferred_batch_sizes: list[int]
    max_queue_delay_ms: float
    max_queue_size: int
    instances: int
    default_timeout_s: float
    queue_depth: int
    priority: int = Field(description="rank on the device under the slack scheduler (higher first)")


class LatencyInfo(BaseModel):
    predicted_ms: dict[int, float] = Field(description="predicted compute time by batch size, refitted online")
    error_p50: float | None = Field(description="median relative error of the predictions of batches run")
    error_p95: float | None = Field(description="95th percentile of that error")
    admission_factor: float | None = Field(
        description="how far the door stretches the predicted work ahead of a new request, learnt from what became "
        "of the requests it admitted (1: as predicted; none where the door does not admit by deadline: `fifo`, `free`, "
        "or the model computes elsewhere)"
    )


class SchedulerInfo(BaseModel):
    policy: str = Field(description="slack, fifo or free (`--scheduler`)")
    slots: int | None = Field(description="batches computing at once on the device (none: no limit)")
    busy_s: float = Field(description="slot-seconds spent computing")
    decision_s: float = Field(description="time spent deciding: the scheduler's overhead")
    batches: int
    refused_at_door: int = Field(description="requests refused before their body was read")
    dropped: int = Field(description="queued requests answered 504 as unreachable, never computed")
    probes: int = Field(description="runs that measured a model whose predicted time was refusing its requests")


class ModelInfo(BaseModel):
    name: str
    task: str
    attention: str
    arch: str
    description: str
    state: str
    error: str | None
    backend: str | None = Field(description="the runner and the variant served, e.g. onnxruntime-cpu/int8")
    variant: str = Field(description="the graph served: fp32, fp16 or int8")
    variant_reason: str = Field(description="why: the precision setting, or auto's timings on this machine")
    variants: list[Variant] = Field(description="every graph export wrote, with its accuracy figures")
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    labels: list[str]
    preprocessing: dict[str, Any]
    batching: BatchingInfo
    latency: LatencyInfo | None = Field(description="the scheduler's latency model (once loaded here)")


class ModelsResponse(BaseModel):
    backend: str
    backend_reason: str
    scheduler: SchedulerInfo
    models: list[ModelInfo]


def _model_info(model: ServedModel) -> ModelInfo:
    manifest = model.manifest
    return ModelInfo(
        name=model.name,
        task=manifest.task,
        attention=manifest.attention,
        arch=manifest.arch,
        description=manifest.description,
        state=model.state,
        error=model.error,
        backend=model.backend,
        variant=model.files.variant_name,
        variant_reason=model.variant_reason,
        variants=manifest.variants(),
        inputs=manifest.inputs,
        outputs=manifest.outputs,
        labels=manifest.labels,
        preprocessing=manifest.preprocessing.model_dump(exclude_none=True),
        batching=BatchingInfo(
            max_batch_size=model.serving.max_batch_size,
            preferred_batch_sizes=list(model.serving.preferred_batch_sizes),
            max_queue_delay_ms=model.serving.max_queue_delay_ms,
            max_queue_size=model.serving.max_queue_size,
            instances=model.serving.instances,
            default_timeout_s=model.serving.default_timeout_s,
            queue_depth=model.batcher.queue_depth if model.batcher is not None else 0,
            priority=model.serving.priority,
        ),
        latency=_latency_info(model),
    )


def _latency_info(model: ServedModel) -> LatencyInfo | None:
    latency = model.latency
    if latency is None:
        return None
    return LatencyInfo(
        predicted_ms={size: 1000 * seconds for size, seconds in latency.table().items()},
        error_p50=latency.error_quantile(0.5),
        error_p95=latency.error_quantile(0.95),
        admission_factor=_admission_factor(model),
    )


def _admission_factor(model: ServedModel) -> float | None:
    batcher = model.batcher
    if not isinstance(batcher, DynamicBatcher) or batcher.policy != "slack":
        return None
    return batcher.calibration.factor(time.perf_counter())


@router.get("/healthz")
async def healthz() -> dict[str, bool]:
    """Live: the process answers (models may still be loading)."""
    return {"live": True}


@router.get("/readyz", responses={503: {"description": "loading, failed or shutting down"}})
async def readyz(state: State) -> JSONResponse:
    """200 once every model is loaded and warmed up; 503 before that, and from the shutdown
    signal on (phase "stopping", then "draining"), while the server still answers."""
    lifecycle = state.lifecycle
    body: dict[str, Any] = {"ready": lifecycle.ready, "phase": lifecycle.phase}
    if lifecycle.error:
        body["error"] = lifecycle.error
    return JSONResponse(body, status_code=200 if lifecycle.ready else 503)


@router.get("/v1/models", response_model=ModelsResponse)
async def list_models(state: State) -> ModelsResponse:
    """Every served model: task, attention, backend, tensors, batching settings and state."""
    return ModelsResponse(
        backend=state.backend.backend,
        backend_reason=state.backend.reason,
        scheduler=SchedulerInfo.model_validate(state.scheduler.describe()),
        models=[_model_info(model) for model in state.repository],
    )
