"""Triton's model repository extension: the index of models, and loading / unloading them.

    POST /v2/repository/index                   every model with its version and state
    POST /v2/repository/models/{name}/load      load (or reload) the newest version
    POST /v2/repository/models/{name}/unload    drain and release it

Load and unload need `--model-control explicit` (see `service.model_control`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError

from easerve.service.dependencies import API_KEY_SECURITY, State
from easerve.service.errors import BadRequest, describe_validation_errors
from easerve.service.openapi import MODEL_ERRORS, ErrorBody

router = APIRouter(prefix="/v2/repository", tags=["v2 repository"], dependencies=API_KEY_SECURITY)

CONTROL_ERRORS: dict[int | str, dict[str, Any]] = {
    **MODEL_ERRORS,
    400: {"model": ErrorBody, "description": "model control is not explicit, or the load failed (old version kept)"},
}


class IndexRequest(BaseModel):
    ready: bool = False


class IndexEntry(BaseModel):
    name: str
    version: str
    state: str
    reason: str


async def _optional_body(request: Request, model: type[BaseModel]) -> Any:
    body = await request.body()
    if not body.strip():
        return model()
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise BadRequest(f"invalid request: {describe_validation_errors(error.errors())}") from None


@router.post("/index", response_model=list[IndexEntry], responses={400: {"model": ErrorBody}})
async def repository_index(request: Request, state: State) -> list[IndexEntry]:
    """Every model of the weights folders or served: name, version, READY / LOADING /
    UNAVAILABLE and why (`{"ready": true}`: only the ready ones)."""
    wanted = await _optional_body(request, IndexRequest)
    return [IndexEntry(**vars(entry)) for entry in await state.control.index(ready_only=wanted.ready)]


@router.post("/models/{model_name}/load", responses=CONTROL_ERRORS)
async def load_model(model_name: str, state: State) -> dict[str, Any]:
    """Load the newest version of the model, or reload it; the old version serves until the new
    one is warm, then drains."""
    state.control.check_explicit()
    await state.control.load(model_name)
    return {}


@router.post("/models/{model_name}/unload", responses=CONTROL_ERRORS)
async def unload_model(model_name: str, state: State) -> dict[str, Any]:
    """Drain the model and release it."""
    state.control.check_explicit()
    await state.control.unload(model_name)
    return {}
