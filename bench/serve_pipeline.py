"""The image tasks `easerve bench serve` measures, and one request's work done without a server.

`answer_one` is what a request to an image route (`/v1/classify`, `/v1/segment`, `/v1/detect`,
`/v1/segment/instances`) costs apart from HTTP and scheduling: decode, preprocess, one runner
call at batch 1, postprocess. It uses the service's
own task code, so the naive server and the offline figures do exactly the service's work;
`answer_upload` is the same from a request body as the service reads it (any of its image
transports: the naive server's path).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from easerve.artifacts.manifest import Manifest
from easerve.artifacts.tasks import TASKS, Answer, TaskSpec
from easerve.loadtest.samples import load_samples
from easerve.service.codecs.images import DecodedImage, decode_image
from easerve.service.codecs.uploads import Upload, decode_images, inspect_images, open_images
from easerve.service.deadline import Deadline
from easerve.service.runners.base import Runner
from easerve.service.tasks.classification import classify
from easerve.service.tasks.detection import detect
from easerve.service.tasks.image_input import image_batch, model_image_size
from easerve.service.tasks.instances import segment_instances
from easerve.service.tasks.segmentation import segment

MAX_IMAGE_PIXELS = 25_000_000
# The image routes' defaults (`top_k`, `score_threshold`, detections' `top_k`).
TOP_K = 5
SCORE_THRESHOLD = 0.3
MAX_DETECTIONS = 100
NO_DEADLINE = Deadline(float("inf"))

# An answer's results as JSON-ready dicts, one per image (the service's own task code).
Results = list[dict[str, object]]
Postprocess = Callable[[dict[str, np.ndarray], Manifest, list[DecodedImage]], Results]


def _classify(outputs: dict[str, np.ndarray], manifest: Manifest, images: list[DecodedImage]) -> Results:
    return list(classify(outputs, manifest, TOP_K))


def _detect(outputs: dict[str, np.ndarray], manifest: Manifest, images: list[DecodedImage]) -> Results:
    sizes = [image.original_size for image in images]
    return detect(outputs, manifest, sizes, SCORE_THRESHOLD, MAX_DETECTIONS)


def server_arguments(description: str) -> argparse.ArgumentParser:
    """The command line every server of the benchmark takes: its models, where they are, its
    port and onnxruntime's intra-op threads."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--weights-dir", type=Path, action="append", required=True)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    return parser


def decode_for(manifest: Manifest, png: bytes) -> DecodedImage:
    """`png` decoded as the service decodes it for `manifest`'s model."""
    height, width = model_image_size(manifest)
    return decode_image(png, MAX_IMAGE_PIXELS, (width, height))


@dataclass(frozen=True)
class ImageTask:
    spec: TaskSpec
    postprocess: Postprocess

    @property
    def route(self) -> str:
        """The service's endpoint."""
        return self.spec.path

    def sample_png(self) -> bytes:
        """A real input from the generated data sets."""
        return load_samples().pngs(self.spec.samples)[0]


# The service's postprocessing of an image model's outputs, by the kind of answer it makes: the
# image tasks with one of these answers are those the benchmark measures.
POSTPROCESSING: dict[Answer, Postprocess] = {
    "labels": _classify,
    "pixel-labels": partial(segment, overlay=None, deadline=NO_DEADLINE),
    "boxes": _detect,
    "instance-masks": partial(
        segment_instances,
        score_threshold=SCORE_THRESHOLD,
        k=MAX_DETECTIONS,
        mask_format="rle",
        overlay=None,
        deadline=NO_DEADLINE,
    ),
}

IMAGE_TASKS: dict[str, ImageTask] = {
    spec.name: ImageTask(spec, POSTPROCESSING[spec.answer])
    for spec in TASKS.values()
    if spec.request == "image" and spec.answer in POSTPROCESSING
}


def answer_images(runner: Runner, manifest: Manifest, images: list[DecodedImage]) -> Results:
    """The images' answers: preprocessed as one batch, one runner call, postprocessed."""
    outputs = runner.run(image_batch([image.image for image in images], manifest))
    return IMAGE_TASKS[manifest.task].postprocess(outputs, manifest, images)


def answer_one(runner: Runner, manifest: Manifest, png: bytes) -> Results:
    """The task's answer for one encoded image, computed at batch 1."""
    return answer_images(runner, manifest, [decode_for(manifest, png)])


def answer_upload(runner: Runner, manifest: Manifest, upload: Upload) -> Results:
    """The task's answer for the one image of a request body (`codecs.uploads.read_image_upload`),
    inspected and decoded as the service does, computed at batch 1; the service's errors
    (BadRequest, PayloadTooLarge, UnsupportedMediaType) for a body it would refuse."""
    height, width = model_image_size(manifest)

    def needed(_width: int, _height: int) -> tuple[int, int]:
        return width, height

    inspected = inspect_images(upload, 1, MAX_IMAGE_PIXELS, needed)
    images = inspected.images or open_images(inspected.payloads, MAX_IMAGE_PIXELS, needed)
    return answer_images(runner, manifest, decode_images(images, NO_DEADLINE))
