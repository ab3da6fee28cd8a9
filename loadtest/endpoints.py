"""The service's task endpoints as the load test sees them, and the request bodies it sends.

Every request is built once, up front, as bytes (the raw PNG of an image, the JSON of a point
cloud or a generation request), so a locust user spends nothing but the HTTP exchange per
request and the server sees the same bytes whichever client sends them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode

if TYPE_CHECKING:
    from easerve.loadtest.samples import SampleSet

ATTENTION_KINDS = ("ea", "sa")
GENERATE_SEED = 0


@dataclass(frozen=True)
class Endpoint:
    """One task endpoint: `task` names it on the command line and tags its locust user;
    `manifest_task` is the task of the models that serve it (manifest.json)."""

    task: str
    manifest_task: str
    path: str
    user_class: str


ENDPOINTS: dict[str, Endpoint] = {
    endpoint.task: endpoint
    for endpoint in (
        Endpoint("classify", "classification", "/v1/classify", "ClassifyUser"),
        Endpoint("detect", "detection", "/v1/detect", "DetectUser"),
        Endpoint("segment", "segmentation", "/v1/segment", "SegmentUser"),
        Endpoint("generate", "generation", "/v1/generate", "GenerateUser"),
        Endpoint(
            "pointcloud-classify", "pointcloud-classification", "/v1/pointcloud/classify", "PointCloudClassifyUser"
        ),
        Endpoint("pointcloud-segment", "pointcloud-segmentation", "/v1/pointcloud/segment", "PointCloudSegmentUser"),
    )
}


@dataclass(frozen=True)
class PreparedRequest:
    """A POST ready to send: `url` is the endpoint's path with its query string."""

    path: str
    url: str
    body: bytes
    content_type: str


def model_selector(attention: str, model: str | None = None) -> dict[str, str]:
    """The query parameters that pick the model: by name if given, else by attention kind."""
    return {"model": model} if model else {"attention": attention}


def _prepare(path: str, query: dict[str, str], body: bytes, content_type: str) -> PreparedRequest:
    return PreparedRequest(path, f"{path}?{urlencode(query)}", body, content_type)


def _json(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def prepared_requests(
    task: str,
    samples: SampleSet,
    selector: dict[str, str],
    image_size: int | None = None,
    clouds_as_npy: bool = False,
) -> list[PreparedRequest]:
    """One request per sample that `task` takes, in the order of `samples` (so the i-th request
    answers for the i-th image / scene / cloud / shape class). Images are sent as raw PNG,
    stretched to `image_size` x `image_size` if given; generation as JSON; clouds as JSON, or
    as their raw `.npy` file with `clouds_as_npy` (far cheaper to parse)."""
    from easerve.loadtest.samples import resized_png

    path = ENDPOINTS[task].path

    def image(png: bytes) -> PreparedRequest:
        return _prepare(path, selector, resized_png(png, image_size) if image_size else png, "image/png")

    if task == "classify":
        return [image(sample.png) for sample in samples.images]
    if task in ("detect", "segment"):
        return [image(sample.png) for sample in samples.scenes]
    if task == "generate":
        return [
            _prepare(path, selector, _json({"label": sample.label, "seed": GENERATE_SEED, "n": 1}), "application/json")
            for sample in samples.images
        ]
    if clouds_as_npy:
        return [_prepare(path, selector, sample.npy, "application/octet-stream") for sample in samples.clouds]
    return [
        _prepare(path, selector, _json({"points": sample.points.tolist()}), "application/json")
        for sample in samples.clouds
    ]
