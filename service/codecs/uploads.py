"""What an image or point cloud request carried, read from the HTTP body by content type.

Reading happens on the event loop (it is I/O); parsing and decoding happen in the functions
here that the routes run on the worker threads: `inspect_images` reads the images' headers (what
decoding them will cost, before a pixel is decoded), `decode_images` then decodes them no
larger than needed; `decode_points` parses a cloud.

Images: `multipart/form-data` (one or more files), a raw `image/*` or
`application/octet-stream` body, or JSON `{"image": "<base64>"}` / `{"images": [...]}`.
Point clouds: JSON `{"points": [[x, y, z], ...]}`, or a `.npy` / `.ply` file as a multipart
upload or a raw body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ValidationError, model_validator
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from easerve.service.codecs.image_headers import metadata_segments
from easerve.service.codecs.images import DecodedImage, OpenedImage, decode_base64, decode_opened, inspect_image
from easerve.service.codecs.pointclouds import points_from_file, points_from_json
from easerve.service.deadline import Deadline
from easerve.service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, describe_validation_errors

JSON = "application/json"
MULTIPART = "multipart/form-data"
OCTET_STREAM = "application/octet-stream"
POINT_FILE_TYPES = (OCTET_STREAM, "application/x-npy", "application/ply", "application/x-ply", "text/plain")
# Working memory per byte of a JSON body of numbers (a cloud's points, v2 `data`): the numbers
# become Python lists of floats before the array is made.
JSON_NUMBERS_BYTES_PER_BODY_BYTE = 24
# Chunks or marker segments besides pixel data per image that encoders write (a camera JPEG about
# a dozen). Pillow parses each in Python, holding the interpreter: images with more are opened
# where that cost is kept apart (`InspectedImages`).
PLAIN_SEGMENTS_PER_IMAGE = 24
# The multipart parser's own caps; the body size limit is what really bounds a request.
_MAX_MULTIPART_FILES = 10_000
_MAX_MULTIPART_FIELDS = 100


@dataclass(frozen=True)
class Upload:
    """A request body, not yet parsed: uploaded files, or a JSON document."""

    files: tuple[bytes, ...] = ()
    json_body: bytes | None = None

    @property
    def size(self) -> int:
        """Bytes received."""
        return sum(map(len, self.files)) + len(self.json_body or b"")


class Base64Images(BaseModel):
    """The JSON form of an image request: exactly one of `image` or `images` (base64)."""

    image: str | None = None
    images: list[str] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Base64Images:
        if (self.image is None) == (self.images is None):
            raise ValueError('give either "image" (one base64 image) or "images" (a list of them)')
        return self

    def encoded(self) -> list[str]:
        return [self.image] if self.image is not None else list(self.images or [])


def media_type(request: Request) -> str:
    """The request's content type without parameters, lower case ("" when missing)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


# The multipart parser logs a warning for each malformed part it meets, then fails: the client
# gets its 400 with the reason, and a client sending malformed bodies must not flood the log.
logging.getLogger("python_multipart").setLevel(logging.ERROR)


async def _multipart_files(request: Request) -> tuple[bytes, ...]:
    try:
        async with request.form(max_files=_MAX_MULTIPART_FILES, max_fields=_MAX_MULTIPART_FIELDS) as form:
            uploads = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
            return tuple([await upload.read() for upload in uploads])
    except StarletteHTTPException as error:
        raise BadRequest(f"malformed multipart body: {error.detail}") from None


async def read_image_upload(request: Request) -> Upload:
    """The body of an image request; UnsupportedMediaType for any other content type."""
    return await _read_upload(
        request,
        lambda kind: kind.startswith("image/") or kind == OCTET_STREAM,
        "multipart/form-data, image/png, image/jpeg or application/json with base64 images",
    )


async def read_points_upload(request: Request) -> Upload:
    """The body of a point cloud request; UnsupportedMediaType for any other content type."""
    return await _read_upload(
        request,
        lambda kind: kind in POINT_FILE_TYPES,
        'application/json {"points": [[x, y, z], ...]}, or a .npy or .ply file (multipart or application/octet-stream)',
    )


async def _read_upload(request: Request, is_file: Callable[[str], bool], accepted: str) -> Upload:
    """The body as multipart files, one file (a content type `is_file` accepts) or JSON."""
    kind = media_type(request)
    if kind == MULTIPART:
        return Upload(files=await _multipart_files(request))
    if is_file(kind):
        return Upload(files=(await request.body(),))
    if kind == JSON:
        return Upload(json_body=await request.body())
    raise UnsupportedMediaType(f"content type {kind or '(none)'!r} is not accepted here; send {accepted}")


def _image_bytes(upload: Upload) -> list[bytes]:
    if upload.json_body is None:
        return list(upload.files)
    try:
        body = Base64Images.model_validate_json(upload.json_body)
    except ValidationError as error:
        raise BadRequest(f"invalid JSON image body: {describe_validation_errors(error.errors())}") from None
    return [decode_base64(text, f"image {index}") for index, text in enumerate(body.encoded())]


# The size an image must be decoded at, from its original (width, height).
NeededSize = Callable[[int, int], tuple[int, int]]


def image_payloads(upload: Upload, max_images: int) -> list[bytes]:
    """The encoded images of an image request (base64 decoded); BadRequest when there is none,
    PayloadTooLarge when there are more than `max_images`."""
    payloads = _image_bytes(upload)
    if not payloads:
        raise BadRequest("the request holds no image")
    if len(payloads) > max_images:
        raise PayloadTooLarge(f"{len(payloads)} images in one request is over the limit of {max_images}")
    return payloads


def open_images(payloads: Sequence[bytes], max_pixels: int, needed: NeededSize) -> list[OpenedImage]:
    """Each encoded image opened, with its header and its cost estimated for decoding at
    `needed(width, height)` (see `inspect_image` for the errors)."""
    return [inspect_image(data, max_pixels, needed) for data in payloads]


@dataclass(frozen=True)
class InspectedImages:
    """A request's images: opened (`images`), or, when they hold more chunks or marker segments
    than encoders write, only their bytes (`payloads`), to be opened where that cost is kept
    apart."""

    payloads: list[bytes]
    images: list[OpenedImage] | None


def inspect_images(upload: Upload, max_images: int, max_pixels: int, needed: NeededSize) -> InspectedImages:
    """The request's `image_payloads`, opened (`open_images`) when they hold at most
    `PLAIN_SEGMENTS_PER_IMAGE` chunks or marker segments per image (`few_segments`)."""
    payloads = image_payloads(upload, max_images)
    if not few_segments(payloads, PLAIN_SEGMENTS_PER_IMAGE * len(payloads)):
        return InspectedImages(payloads, None)
    return InspectedImages(payloads, open_images(payloads, max_pixels, needed))


def few_segments(payloads: Sequence[bytes], most: int) -> bool:
    """Whether the images hold at most `most` chunks or marker segments besides their pixel data
    in all: what opening them costs Pillow (a walk that stops past `most`)."""
    left = most
    for data in payloads:
        left -= metadata_segments(data, left)
        if left < 0:
            return False
    return True


def decode_images(images: Sequence[OpenedImage], deadline: Deadline) -> list[DecodedImage]:
    """Each opened image decoded to RGB as `inspect_images` planned it (see `decode_image`),
    checking the deadline before each."""
    decoded = []
    for image in images:
        deadline.check("decoding images")
        decoded.append(decode_opened(image))
    return decoded


def decode_points(upload: Upload, max_points: int) -> np.ndarray:
    """The cloud of a point cloud request, float32 (P, 3); one cloud per request."""
    if upload.json_body is not None:
        return points_from_json(upload.json_body, max_points)
    if len(upload.files) != 1:
        raise BadRequest(f"send exactly one point cloud file, got {len(upload.files)}")
    return points_from_file(upload.files[0], max_points)


def _binary() -> dict[str, str]:
    return {"type": "string", "format": "binary"}


# OpenAPI descriptions of the bodies the routes read themselves (FastAPI cannot infer them).
IMAGE_BODY_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            # Any field names; every file part is an image (other parts are ignored).
            MULTIPART: {"schema": {"type": "object", "additionalProperties": _binary(), "minProperties": 1}},
            "image/png": {"schema": _binary()},
            "image/jpeg": {"schema": _binary()},
            JSON: {"schema": Base64Images.model_json_schema()},
        },
    }
}
POINTS_BODY_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "points": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
                    },
                    "required": ["points"],
                }
            },
            MULTIPART: {
                "schema": {"type": "object", "additionalProperties": _binary(), "minProperties": 1, "maxProperties": 1}
            },
            OCTET_STREAM: {"schema": _binary()},
        },
    }
}
