"""`/v1/pointcloud/classify` and `/v1/pointcloud/segment`: clouds of any size."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query, Request

from easerve.artifacts.manifest import Manifest
from easerve.artifacts.tasks import POINTCLOUD_CLASSIFICATION, POINTCLOUD_SEGMENTATION
from easerve.service.codecs.uploads import (
    JSON_NUMBERS_BYTES_PER_BODY_BYTE,
    POINTS_BODY_OPENAPI,
    Upload,
    decode_points,
    read_points_upload,
)
from easerve.service.contract import served_working_bytes, tensors_working_bytes
from easerve.service.dependencies import API_KEY_OPENAPI, State, finishes_inference, task_inference
from easerve.service.inference import SMALL_ANSWER_MODEL_INPUTS, InferenceContext
from easerve.service.json_answers import JSONBytes
from easerve.service.openapi import INFERENCE_ERRORS
from easerve.service.tasks.classification import ClassProbabilities, ranked
from easerve.service.tasks.pointcloud import (
    PointCloudClassifyResponse,
    PointCloudSegmentResponse,
    SampledCloud,
    sample_cloud,
    segment_cloud,
)

router = APIRouter(prefix="/v1/pointcloud", tags=["point clouds"], responses=INFERENCE_ERRORS)
# The body the route reads itself, and the API key (checked by the middleware).
_OPENAPI = POINTS_BODY_OPENAPI | API_KEY_OPENAPI

# Working memory per byte of a file's body: read into one array and copied once as float32.
_FILE_BYTES_PER_BODY_BYTE = 4

ClassifyContext = Annotated[InferenceContext, Depends(task_inference(POINTCLOUD_CLASSIFICATION))]
SegmentContext = Annotated[InferenceContext, Depends(task_inference(POINTCLOUD_SEGMENTATION))]


def _decode_and_sample(upload: Upload, max_points: int, manifest: Manifest) -> tuple[np.ndarray, SampledCloud]:
    points = decode_points(upload, max_points)
    return points, sample_cloud(points, manifest)


async def _prepared_cloud(request: Request, state: State, context: InferenceContext) -> tuple[np.ndarray, SampledCloud]:
    """The request's points and the model's input made from them, in one worker call, once the
    body's estimated working memory and the model's for the cloud (at the model's num_points)
    are admitted; a model without num_points runs the cloud's own count, charged once sampled."""
    upload = await context.read(read_points_upload(request))
    manifest = context.model.manifest
    per_byte = JSON_NUMBERS_BYTES_PER_BODY_BYTE if upload.json_body is not None else _FILE_BYTES_PER_BODY_BYTE
    model = served_working_bytes(manifest, 1)
    context.admit(per_byte * upload.size, "the point cloud", model_bytes=model or 0)
    points, cloud = await context.offload(_decode_and_sample, upload, state.settings.max_points, manifest)
    if model is None:
        shapes = {name: array.shape for name, array in cloud.inputs.items()}
        context.admit(
            0, f"the point cloud of {len(points)} points", model_bytes=tensors_working_bytes(manifest, shapes)
        )
    return points, cloud


@router.post("/classify", response_model=PointCloudClassifyResponse, openapi_extra=_OPENAPI)
@finishes_inference
async def classify_point_cloud(
    request: Request,
    state: State,
    context: ClassifyContext,
    top_k: Annotated[int, Query(ge=1, le=1000, description="labels to return")] = 5,
) -> JSONBytes:
    """Top-k object classes of the cloud (made on the runner's thread, as image classes are)."""
    points, cloud = await _prepared_cloud(request, state, context)
    manifest = context.model.manifest
    finish = context.answer_with(
        lambda prepared: {"num_points": len(points), **ranked(prepared, manifest.labels, top_k)[0]},
        ClassProbabilities(manifest.outputs[0].name),
        light=True,
    )
    return JSONBytes(await context.answer(cloud.inputs, finish))


@router.post("/segment", response_model=PointCloudSegmentResponse, openapi_extra=_OPENAPI)
@finishes_inference
async def segment_point_cloud(request: Request, state: State, context: SegmentContext) -> JSONBytes:
    """One part label per input point, in input order: made where the batch ran for a cloud of
    at most a few times the model's points (as image classes are), else mapped back on a worker
    (a cloud may be large)."""
    points, cloud = await _prepared_cloud(request, state, context)
    manifest = context.model.manifest
    finish = context.answer_with(
        lambda outputs: {"num_points": len(points), "parts": segment_cloud(outputs, manifest, points, cloud)}
    )
    small = len(points) <= SMALL_ANSWER_MODEL_INPUTS * len(cloud.kept)
    return JSONBytes(await context.answer(cloud.inputs, finish, on_the_runner=small))
