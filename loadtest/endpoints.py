"""The service's task endpoints as the load test sees them, and the request bodies it sends.

Every request is built once, up front, as bytes (the raw PNG of an image, the JSON of a point
cloud or of a class to draw), so a locust user spends nothing but the HTTP exchange per
request and the server sees the same bytes whichever client sends them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from easerve.artifacts.tasks import TASKS, RequestKind, TaskSpec

if TYPE_CHECKING:
    from easerve.loadtest.samples import SampleSet

ATTENTION_KINDS = ("ea", "sa")
GENERATE_SEED = 0
PNG = "image/png"
JSON = "application/json"
NPY = "application/octet-stream"
# Endpoint words whose class-name spelling is not just capitalized: one word there, two in a name.
CLASS_NAME_WORDS = {"pointcloud": "PointCloud"}


# The task endpoints by their name (the spec's `endpoint`: on the command line, and the tag of
# each locust user).
ENDPOINTS: dict[str, TaskSpec] = {spec.endpoint: spec for spec in TASKS.values()}


def user_class(spec: TaskSpec) -> str:
    """The locust user class of a task's endpoint: "pointcloud-classify" -> "PointCloudClassifyUser"."""
    words = spec.endpoint.split("-")
    return "".join(CLASS_NAME_WORDS.get(word, word.capitalize()) for word in words) + "User"


@dataclass(frozen=True)
class PreparedRequest:
    """A POST ready to send: `url` is the endpoint's path with its query string."""

    path: str
    url: str
    body: bytes
    content_type: str


@dataclass(frozen=True)
class BodyOptions:
    image_size: int | None
    clouds_as_npy: bool


# A request body and its content type.
Body = tuple[bytes, str]


def model_selector(attention: str, model: str | None = None) -> dict[str, str]:
    """The query parameters that pick the model: by name if given, else by attention kind."""
    return {"model": model} if model else {"attention": attention}


def _json(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _image_bodies(spec: TaskSpec, samples: SampleSet, options: BodyOptions) -> list[Body]:
    from easerve.loadtest.samples import resized_png

    size = options.image_size
    return [(resized_png(png, size) if size else png, PNG) for png in samples.pngs(spec.samples)]


def _class_bodies(spec: TaskSpec, samples: SampleSet, options: BodyOptions) -> list[Body]:
    # One request per shape class: the single-shape images are one per class.
    return [(_json({"label": sample.label, "seed": GENERATE_SEED, "n": 1}), JSON) for sample in samples.images]


def _cloud_bodies(spec: TaskSpec, samples: SampleSet, options: BodyOptions) -> list[Body]:
    if options.clouds_as_npy:
        return [(sample.npy, NPY) for sample in samples.clouds]
    return [(_json({"points": sample.points.tolist()}), JSON) for sample in samples.clouds]


BODY_BUILDERS: dict[RequestKind, Callable[[TaskSpec, SampleSet, BodyOptions], list[Body]]] = {
    "image": _image_bodies,
    "class": _class_bodies,
    "pointcloud": _cloud_bodies,
}


def prepared_requests(
    task: str,
    samples: SampleSet,
    selector: dict[str, str],
    image_size: int | None = None,
    clouds_as_npy: bool = False,
) -> list[PreparedRequest]:
    """One request per sample that `task` takes, in the order of `samples` (so the i-th request
    answers for the i-th image / scene / cloud / shape class). Images are sent as raw PNG,
    stretched to `image_size` x `image_size` if given; classes to draw as JSON; clouds as JSON,
    or as their raw `.npy` file with `clouds_as_npy` (far cheaper to parse)."""
    spec = ENDPOINTS[task]
    bodies = BODY_BUILDERS[spec.request](spec, samples, BodyOptions(image_size, clouds_as_npy))
    url = f"{spec.path}?{urlencode(selector)}"
    return [PreparedRequest(spec.path, url, body, content_type) for body, content_type in bodies]
