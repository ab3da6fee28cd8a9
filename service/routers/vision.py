"""`/v1/classify`, `/v1/detect`, `/v1/segment`: images in, answers in the original image's terms."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from PIL import Image

from easerve.artifacts.manifest import Manifest
from easerve.service.batcher import Tensors
from easerve.service.codecs.uploads import IMAGE_BODY_OPENAPI, Upload, decode_images, read_image_upload
from easerve.service.dependencies import State, require_api_key, task_inference
from easerve.service.inference import InferenceContext
from easerve.service.settings import Settings
from easerve.service.tasks.classification import ClassifyResponse, classify
from easerve.service.tasks.detection import DetectResponse, detect
from easerve.service.tasks.image_input import image_batch
from easerve.service.tasks.segmentation import SegmentResponse, segment

router = APIRouter(prefix="/v1", tags=["images"], dependencies=[Depends(require_api_key)])

ClassifyContext = Annotated[InferenceContext, Depends(task_inference("classification"))]
DetectContext = Annotated[InferenceContext, Depends(task_inference("detection"))]
SegmentContext = Annotated[InferenceContext, Depends(task_inference("segmentation"))]


def _decode_and_batch(upload: Upload, settings: Settings, manifest: Manifest) -> tuple[list[Image.Image], Tensors]:
    images = decode_images(upload, settings.max_images_per_request, settings.max_image_pixels)
    return images, image_batch(images, manifest)


async def _prepared_images(
    request: Request, state: State, context: InferenceContext
) -> tuple[list[Image.Image], Tensors]:
    """The request's decoded images and the model's input batch, made in one worker call."""
    upload = await read_image_upload(request)
    return await context.offload(_decode_and_batch, upload, state.settings, context.model.manifest)


@router.post("/classify", response_model=ClassifyResponse, openapi_extra=IMAGE_BODY_OPENAPI)
async def classify_images(
    request: Request,
    state: State,
    context: ClassifyContext,
    top_k: Annotated[int, Query(ge=1, le=1000, description="labels per image")] = 5,
) -> ClassifyResponse:
    """Top-k labels with probabilities for each image."""
    _, inputs = await _prepared_images(request, state, context)
    manifest = context.model.manifest
    outcome = await context.infer(inputs)
    results = await context.offload(classify, outcome.outputs, manifest, top_k)
    return ClassifyResponse(**context.response_fields(outcome), results=results)


@router.post("/detect", response_model=DetectResponse, openapi_extra=IMAGE_BODY_OPENAPI)
async def detect_objects(
    request: Request,
    state: State,
    context: DetectContext,
    score_threshold: Annotated[float, Query(ge=0, le=1, description="drop detections scoring less")] = 0.3,
    top_k: Annotated[int, Query(ge=1, le=1000, description="detections per image, best first")] = 100,
) -> DetectResponse:
    """Boxes (x1, y1, x2, y2 in the original image's pixels), labels and scores per image."""
    images, inputs = await _prepared_images(request, state, context)
    manifest = context.model.manifest
    outcome = await context.infer(inputs)
    sizes = [image.size for image in images]
    results = await context.offload(detect, outcome.outputs, manifest, sizes, score_threshold, top_k)
    return DetectResponse(**context.response_fields(outcome), results=results)


@router.post("/segment", response_model=SegmentResponse, openapi_extra=IMAGE_BODY_OPENAPI)
async def segment_images(
    request: Request,
    state: State,
    context: SegmentContext,
    overlay: Annotated[bool, Query(description="also return the image with classes coloured")] = False,
    alpha: Annotated[float, Query(ge=0, le=1, description="overlay opacity")] = 0.5,
) -> SegmentResponse:
    """A class mask at each image's own resolution (PNG, base64) and per-class pixel fractions."""
    images, inputs = await _prepared_images(request, state, context)
    manifest = context.model.manifest
    outcome = await context.infer(inputs)
    results = await context.offload(segment, outcome.outputs, manifest, images, overlay, alpha)
    return SegmentResponse(**context.response_fields(outcome), results=results)
