"""`/v1/segment/instances`: per image its objects' classes, scores, boxes and masks, in the original
image's terms (see `service.tasks.instances`).

The request goes as every image request does (`vision`): the body read by its deadline, the
images inspected and their cost admitted, decoded no larger than the model (or the overlay)
needs, batched; the masks are made and encoded where the batch ran when they are small (no
overlay, `small_images`), else on a worker.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from easerve.artifacts.tasks import INSTANCE_SEGMENTATION
from easerve.service.dependencies import State, finishes_inference, task_inference
from easerve.service.inference import InferenceContext
from easerve.service.json_answers import JSONBytes
from easerve.service.openapi import INFERENCE_ERRORS
from easerve.service.routers.vision import (
    IMAGE_ROUTE_OPENAPI,
    OverlayAlpha,
    OverlayEncoding,
    OverlayWidth,
    admitted_images,
    pictured_inputs,
    requested_overlay,
    small_images,
)
from easerve.service.tasks.instances import InstancesResponse, MaskFormat, instance_bytes, segment_instances

router = APIRouter(prefix="/v1", tags=["images"], responses=INFERENCE_ERRORS)

InstancesContext = Annotated[InferenceContext, Depends(task_inference(INSTANCE_SEGMENTATION))]


@router.post("/segment/instances", response_model=InstancesResponse, openapi_extra=IMAGE_ROUTE_OPENAPI)
@finishes_inference
async def segment_instances_route(
    request: Request,
    state: State,
    context: InstancesContext,
    score_threshold: Annotated[float, Query(ge=0, le=1, description="drop instances scoring less")] = 0.3,
    top_k: Annotated[int, Query(ge=1, le=1000, description="instances per image, best first")] = 100,
    mask_format: Annotated[MaskFormat, Query(description="COCO run-length encoding, or a 1-bit PNG")] = "rle",
    overlay: Annotated[bool, Query(description="also return the image with the instances drawn")] = False,
    alpha: OverlayAlpha = 0.5,
    overlay_width: OverlayWidth = None,
    overlay_format: OverlayEncoding = "png",
) -> JSONBytes:
    """Per image its instances, best first: class, score, box (x1, y1, x2, y2) and mask at the
    original resolution, and with `overlay=true` the image with each instance coloured."""
    manifest = context.model.manifest
    drawn = requested_overlay(state, overlay, alpha, overlay_width, overlay_format)
    images = await admitted_images(request, state, context, drawn, instance_bytes)
    pictures, inputs = await pictured_inputs(context, images, drawn)
    finish = context.answer_with(
        lambda outputs: {
            "results": segment_instances(
                outputs, manifest, pictures, score_threshold, top_k, mask_format, drawn, context.deadline
            )
        }
    )
    small = drawn is None and small_images(images, manifest)
    return JSONBytes(await context.answer(inputs, finish, on_the_runner=small))
