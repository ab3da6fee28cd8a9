"""Liveness, readiness and what is served: `/healthz`, `/readyz`, `/v1/models`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from easerve.artifacts.manifest import TensorInfo, Variant
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


class ModelsResponse(BaseModel):
    backend: str
    backend_reason: str
    models: list[ModelInfo]


def _model_info(model: ServedModel, state: State) -> ModelInfo:
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
        ),
    )


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
        models=[_model_info(model, state) for model in state.repository],
    )
