"""`/v1/generate`: `n` images of a class, deterministic for a seed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from easerve.service.dependencies import State, require_api_key, task_inference
from easerve.service.errors import PayloadTooLarge
from easerve.service.inference import InferenceContext
from easerve.service.tasks.generation import GenerateRequest, GenerateResponse, label_index, latent_inputs, to_pngs

router = APIRouter(prefix="/v1", tags=["generation"], dependencies=[Depends(require_api_key)])

GenerateContext = Annotated[InferenceContext, Depends(task_inference("generation"))]


@router.post("/generate", response_model=GenerateResponse)
async def generate_images(body: GenerateRequest, state: State, context: GenerateContext) -> GenerateResponse:
    """PNG images (base64) of the requested class; the same label and seed give the same images."""
    limit = state.settings.max_images_per_request
    if body.n > limit:
        raise PayloadTooLarge(f"n = {body.n} images is over the limit of {limit} per request")
    manifest = context.model.manifest
    label = label_index(body.label, manifest.labels)
    outcome = await context.infer(await context.offload(latent_inputs, manifest, label, body.seed, body.n))
    images = await context.offload(to_pngs, outcome.outputs, manifest)
    return GenerateResponse(
        **context.response_fields(outcome), label=manifest.labels[label], seed=body.seed, images=images
    )
