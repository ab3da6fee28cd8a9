"""`/v1/pointcloud/classify` and `/v1/pointcloud/segment`: clouds of any size."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query, Request

from service.codecs.uploads import POINTS_BODY_OPENAPI, decode_points, read_points_upload
from service.dependencies import State, require_api_key, task_inference
from service.inference import InferenceContext
from service.tasks.pointcloud import (
    PointCloudClassifyResponse,
    PointCloudSegmentResponse,
    classify_cloud,
    sample_cloud,
    segment_cloud,
)

router = APIRouter(prefix="/v1/pointcloud", tags=["point clouds"], dependencies=[Depends(require_api_key)])

ClassifyContext = Annotated[InferenceContext, Depends(task_inference("pointcloud-classification"))]
SegmentContext = Annotated[InferenceContext, Depends(task_inference("pointcloud-segmentation"))]


async def _points(request: Request, state: State, context: InferenceContext) -> np.ndarray:
    upload = await read_points_upload(request)
    return await context.offload(decode_points, upload, state.settings.max_points)


@router.post("/classify", response_model=PointCloudClassifyResponse, openapi_extra=POINTS_BODY_OPENAPI)
async def classify_point_cloud(
    request: Request,
    state: State,
    context: ClassifyContext,
    top_k: Annotated[int, Query(ge=1, le=1000, description="labels to return")] = 5,
) -> PointCloudClassifyResponse:
    """Top-k object classes of the cloud."""
    points = await _points(request, state, context)
    manifest = context.model.manifest
    cloud = await context.offload(sample_cloud, points, manifest)
    outcome = await context.infer(cloud.inputs)
    ranked = await context.offload(classify_cloud, outcome.outputs, manifest, top_k)
    return PointCloudClassifyResponse(**context.response_fields(outcome), num_points=len(points), top_k=ranked)


@router.post("/segment", response_model=PointCloudSegmentResponse, openapi_extra=POINTS_BODY_OPENAPI)
async def segment_point_cloud(request: Request, state: State, context: SegmentContext) -> PointCloudSegmentResponse:
    """One part label per input point, in input order."""
    points = await _points(request, state, context)
    manifest = context.model.manifest
    cloud = await context.offload(sample_cloud, points, manifest)
    outcome = await context.infer(cloud.inputs)
    parts = await context.offload(segment_cloud, outcome.outputs, manifest, points, cloud)
    return PointCloudSegmentResponse(**context.response_fields(outcome), num_points=len(points), parts=parts)
