"""`/v1/generate`: `n` images of a class, deterministic for a seed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from easerve.artifacts.tasks import GENERATION
from easerve.service.contract import served_working_bytes
from easerve.service.dependencies import API_KEY_OPENAPI, State, finishes_inference, task_inference
from easerve.service.errors import PayloadTooLarge
from easerve.service.inference import SMALL_ANSWER_MODEL_INPUTS, InferenceContext
from easerve.service.json_answers import JSONBytes
from easerve.service.openapi import INFERENCE_ERRORS
from easerve.service.tasks.generation import (
    GenerateRequest,
    GenerateResponse,
    generated_bytes,
    label_index,
    latent_inputs,
    to_pngs,
)

router = APIRouter(prefix="/v1", tags=[GENERATION.name], responses=INFERENCE_ERRORS)

GenerateContext = Annotated[InferenceContext, Depends(task_inference(GENERATION))]


@router.post("/generate", response_model=GenerateResponse, openapi_extra=API_KEY_OPENAPI)
@finishes_inference
async def generate_images(body: GenerateRequest, state: State, context: GenerateContext) -> JSONBytes:
    """PNG images (base64) of the requested class; the same label and seed give the same images."""
    limit = state.settings.max_images_per_request
    if body.n > limit:
        raise PayloadTooLarge(f"n = {body.n} images is over the limit of {limit} per request")
    manifest = context.model.manifest
    label = label_index(body.label, manifest.labels)
    model = served_working_bytes(manifest, body.n) or 0
    context.admit(generated_bytes(manifest, body.n), f"{body.n} generated image(s)", model_bytes=model)
    finish = context.answer_with(
        lambda outputs: {"label": manifest.labels[label], "seed": body.seed, "images": to_pngs(outputs, manifest)}
    )
    # A few images: their latents drawn here on the loop (microseconds) and their PNGs encoded
    # where the batch ran; more: a worker each way.
    if body.n <= SMALL_ANSWER_MODEL_INPUTS:
        return JSONBytes(await context.answer(latent_inputs(manifest, label, body.seed, body.n), finish))
    inputs = await context.offload(latent_inputs, manifest, label, body.seed, body.n)
    return JSONBytes(await context.answer(inputs, finish, on_the_runner=False))
