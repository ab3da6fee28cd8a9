"""`/v1/classify`, `/v1/detect`, `/v1/segment`: images in, answers in the original image's terms.

Each request: the body is read (by its deadline), the images' headers are inspected, the
request's working memory (decoding, and the model's at its input size) is admitted against the
budgets, then the images are decoded no larger than the model (or an overlay) needs, batched,
and the answers mapped back to each original.

A small body's headers are inspected on the event loop (bounded work, cheaper than a thread hop);
small images are decoded on the runner's thread when their batch runs (`model_inputs`), others
on a worker; classification and detection answers, and small images' masks, are made and encoded
on the runner's thread right after the batch (`InferenceContext.answer_with`), overlays and large
masks on a worker.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from PIL import Image

from easerve.artifacts.manifest import Manifest
from easerve.artifacts.tasks import CLASSIFICATION, DETECTION, SEGMENTATION
from easerve.service.batcher import Deferred, Inputs, Tensors
from easerve.service.codecs.images import DecodedImage, OpenedImage
from easerve.service.codecs.uploads import (
    IMAGE_BODY_OPENAPI,
    NeededSize,
    decode_images,
    inspect_images,
    open_images,
    read_image_upload,
)
from easerve.service.contract import served_working_bytes
from easerve.service.deadline import Deadline
from easerve.service.dependencies import API_KEY_OPENAPI, State, finishes_inference, task_inference
from easerve.service.inference import SMALL_ANSWER_MODEL_INPUTS, InferenceContext
from easerve.service.json_answers import JSONBytes
from easerve.service.openapi import INFERENCE_ERRORS
from easerve.service.tasks.classification import ClassifyResponse, ClassProbabilities, ranked
from easerve.service.tasks.detection import DetectResponse, detect
from easerve.service.tasks.image_input import ImageInputs, model_image_size
from easerve.service.tasks.segmentation import Overlay, OverlayFormat, SegmentResponse, segment, segmentation_bytes

router = APIRouter(prefix="/v1", tags=["images"], responses=INFERENCE_ERRORS)
# The body the route reads itself, and the API key (checked by the middleware).
IMAGE_ROUTE_OPENAPI = IMAGE_BODY_OPENAPI | API_KEY_OPENAPI

ClassifyContext = Annotated[InferenceContext, Depends(task_inference(CLASSIFICATION))]
DetectContext = Annotated[InferenceContext, Depends(task_inference(DETECTION))]
SegmentContext = Annotated[InferenceContext, Depends(task_inference(SEGMENTATION))]

# The overlay's options, as every route that draws one takes them.
OverlayAlpha = Annotated[float, Query(ge=0, le=1, description="overlay opacity")]
OverlayWidth = Annotated[
    int | None,
    Query(ge=1, le=65535, description="draw the overlay this wide, height in proportion (default: the image's)"),
]
OverlayEncoding = Annotated[
    OverlayFormat,
    Query(description="png (lossless, `overlay_png`) or jpeg (`overlay_jpeg`: a fraction of the time and size)"),
]

# The body is held while the request runs, with its base64 text decoded beside it (JSON bodies).
_BODY_COPIES = 2
# Up to this size a body's image headers are read on the event loop: a JSON parse, a base64
# decode and a header parse of this much are cheaper than the round trip to a worker thread.
# Images holding more chunks than encoders write are opened and decoded on the heavy pool,
# whatever their size (`InspectedImages`).
_INLINE_INSPECTION_BYTES = 256 * 1024
# The estimated working memory of the answer to one image: (width, height, overlay pixels) -> bytes.
AnswerBytes = Callable[[int, int, int], int]


def requested_overlay(
    state: State, overlay: bool, alpha: float, width: int | None, encoding: OverlayFormat
) -> Overlay | None:
    """The overlay a request asked for (`overlay`, `alpha`, `overlay_width`, `overlay_format`),
    None without one."""
    return Overlay(alpha, state.settings.max_overlay_pixels, width, encoding) if overlay else None


def _decode_size(manifest: Manifest, drawn: Overlay | None) -> NeededSize:
    """The size to decode an image at: the model's, or its overlay's where that is larger."""
    model_height, model_width = model_image_size(manifest)

    def needed(width: int, height: int) -> tuple[int, int]:
        if drawn is None:
            return model_width, model_height
        drawn_width, drawn_height = drawn.size(width, height)
        return max(drawn_width, model_width), max(drawn_height, model_height)

    return needed


async def admitted_images(
    request: Request,
    state: State,
    context: InferenceContext,
    drawn: Overlay | None = None,
    answer_bytes: AnswerBytes | None = None,
) -> list[OpenedImage]:
    """The request's images, read and inspected by the deadline, their cost admitted: the body,
    decoding each no larger than the model or the overlay `drawn` needs, the model's working
    memory for them at its own size, and `answer_bytes` of each image's answer."""
    upload = await context.read(read_image_upload(request))
    settings = state.settings
    needed = _decode_size(context.model.manifest, drawn)
    # The body's own cost first: one over the heavy threshold is parsed on the heavy workers.
    context.admit(_BODY_COPIES * upload.size, "the request body")
    limits = (upload, settings.max_images_per_request, settings.max_image_pixels, needed)
    if upload.size <= _INLINE_INSPECTION_BYTES:
        inspected = inspect_images(*limits)
    else:
        inspected = await context.offload(inspect_images, *limits)
    images = inspected.images
    if images is None:
        context.costly = True
        images = await context.offload(open_images, inspected.payloads, settings.max_image_pixels, needed)
    decoding = sum(image.header.working_bytes for image in images)
    answers = 0
    if answer_bytes is not None:
        for image in images:
            width, height = image.header.width, image.header.height
            answers += answer_bytes(width, height, math.prod(drawn.size(width, height)) if drawn else 0)
    model = served_working_bytes(context.model.manifest, len(images)) or 0
    context.admit(decoding + answers, f"{len(images)} image(s)", model_bytes=model)
    return images


def _decoded_batch(
    inputs: ImageInputs, images: list[OpenedImage], deadline: Deadline
) -> tuple[list[DecodedImage], Tensors]:
    decoded = decode_images(images, deadline)
    return decoded, inputs.batch([image.image for image in decoded])


async def decoded_images(context: InferenceContext, images: list[OpenedImage]) -> tuple[list[DecodedImage], Tensors]:
    """Decode, as inspection planned them, and batch the admitted images (one worker call)."""
    return await context.offload(_decoded_batch, ImageInputs.of(context.model.manifest), images, context.deadline)


def _pictures(images: list[OpenedImage], deadline: Deadline) -> list[Image.Image]:
    return [image.image for image in decode_images(images, deadline)]


def _model_batch(inputs: ImageInputs, images: list[OpenedImage], deadline: Deadline) -> Tensors:
    return inputs.batch(_pictures(images, deadline))


async def model_inputs(context: InferenceContext, images: list[OpenedImage]) -> Inputs:
    """The model's inputs for the admitted images, when only their sizes are needed besides.
    Small ones (at most `SMALL_ANSWER_MODEL_INPUTS` model inputs of pixels, plainly encoded: no
    more chunks or scans, and no more bytes, than their pixels need) whose model computes in
    this process on the CPU are decoded where their batch runs, with the batch's other images,
    as Triton's Python models do once per batch: no worker hop for them. Others on a worker
    first."""
    manifest = context.model.manifest
    inputs = ImageInputs.of(manifest)
    plain = not context.costly and all(image.plainly_encoded for image in images)
    if plain and context.batched_here() and small_images(images, manifest):
        context.check_reachable()
        load = functools.partial(_pictures, images, context.deadline)
        return Deferred(len(images), inputs.signature, load, inputs)
    return await context.offload(_model_batch, inputs, images, context.deadline)


@router.post("/classify", response_model=ClassifyResponse, openapi_extra=IMAGE_ROUTE_OPENAPI)
@finishes_inference
async def classify_images(
    request: Request,
    state: State,
    context: ClassifyContext,
    top_k: Annotated[int, Query(ge=1, le=1000, description="labels per image")] = 5,
) -> JSONBytes:
    """Top-k labels with probabilities for each image."""
    images = await admitted_images(request, state, context)
    inputs = await model_inputs(context, images)
    manifest = context.model.manifest
    finish = context.answer_with(
        lambda prepared: {"results": ranked(prepared, manifest.labels, top_k)},
        ClassProbabilities(manifest.outputs[0].name),
        light=True,
    )
    return JSONBytes(await context.answer(inputs, finish))


@router.post("/detect", response_model=DetectResponse, openapi_extra=IMAGE_ROUTE_OPENAPI)
@finishes_inference
async def detect_objects(
    request: Request,
    state: State,
    context: DetectContext,
    score_threshold: Annotated[float, Query(ge=0, le=1, description="drop detections scoring less")] = 0.3,
    top_k: Annotated[int, Query(ge=1, le=1000, description="detections per image, best first")] = 100,
) -> JSONBytes:
    """Boxes (x1, y1, x2, y2 in the original image's pixels), labels and scores per image."""
    images = await admitted_images(request, state, context)
    inputs = await model_inputs(context, images)
    manifest = context.model.manifest
    sizes = [image.original_size for image in images]
    finish = context.answer_with(
        lambda outputs: {"results": detect(outputs, manifest, sizes, score_threshold, top_k)}, light=True
    )
    return JSONBytes(await context.answer(inputs, finish))


@router.post("/segment", response_model=SegmentResponse, openapi_extra=IMAGE_ROUTE_OPENAPI)
@finishes_inference
async def segment_images(
    request: Request,
    state: State,
    context: SegmentContext,
    overlay: Annotated[bool, Query(description="also return the image with classes coloured")] = False,
    alpha: OverlayAlpha = 0.5,
    overlay_width: OverlayWidth = None,
    overlay_format: OverlayEncoding = "png",
) -> JSONBytes:
    """A class mask at each image's own resolution (PNG, base64) and per-class pixel fractions."""
    manifest = context.model.manifest
    drawn = requested_overlay(state, overlay, alpha, overlay_width, overlay_format)
    model_height, _ = model_image_size(manifest)

    def answer_bytes(width: int, height: int, overlay_pixels: int) -> int:
        return segmentation_bytes(width, height, len(manifest.labels), model_height, overlay_pixels)

    images = await admitted_images(request, state, context, drawn, answer_bytes)
    pictures, inputs = await pictured_inputs(context, images, drawn)
    finish = context.answer_with(
        lambda outputs: {"results": segment(outputs, manifest, pictures, drawn, context.deadline)}
    )
    small = drawn is None and small_images(images, manifest)
    return JSONBytes(await context.answer(inputs, finish, on_the_runner=small))


async def pictured_inputs(
    context: InferenceContext, images: list[OpenedImage], drawn: Overlay | None
) -> tuple[Sequence[DecodedImage | OpenedImage], Inputs]:
    """The images an answer draws on (decoded, with an overlay `drawn`; else only their sizes are
    needed: as opened) and the model's inputs."""
    if drawn is None:
        return images, await model_inputs(context, images)
    return await decoded_images(context, images)


def small_images(images: Sequence[DecodedImage | OpenedImage], manifest: Manifest) -> bool:
    """Whether the images hold at most `SMALL_ANSWER_MODEL_INPUTS` model inputs of pixels: their
    decoding, and their masks at their size, are bounded work done where the batch runs; larger
    ones go to a worker."""
    height, width = model_image_size(manifest)
    return sum(math.prod(image.original_size) for image in images) <= SMALL_ANSWER_MODEL_INPUTS * height * width
