"""Image bytes in (PNG, JPEG, WebP; decompression bombs refused), PNG out.

The pixel limit is checked from the header, before a single pixel is decoded, and does not
depend on Pillow's process-wide `Image.MAX_IMAGE_PIXELS` (Pillow's own bomb error, raised
above twice that, is mapped to the same 413).
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from easerve.service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP")


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """The fully decoded RGB image in `data` (EXIF orientation applied).

    BadRequest: empty, not an image, corrupt or truncated. UnsupportedMediaType: an image in a
    format outside SUPPORTED_FORMATS. PayloadTooLarge: more than `max_pixels` pixels.
    """
    if not data:
        raise BadRequest("empty image: the body or file has 0 bytes")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise PayloadTooLarge(f"image refused as a decompression bomb: {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise BadRequest(f"cannot decode the image: not a {', '.join(SUPPORTED_FORMATS)} file, or corrupt") from None
    with image:
        if image.format not in SUPPORTED_FORMATS:
            raise UnsupportedMediaType(
                f"unsupported image format {image.format}; send one of {', '.join(SUPPORTED_FORMATS)}"
            )
        width, height = image.size
        if width * height > max_pixels:
            raise PayloadTooLarge(
                f"image of {width}x{height} = {width * height} pixels is over the limit of {max_pixels} pixels"
            )
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return upright.convert("RGB")
        except (OSError, SyntaxError, ValueError) as error:
            raise BadRequest(f"corrupt or truncated {image.format} image: {error}") from None


def decode_base64(text: str, what: str) -> bytes:
    """The bytes of a base64 string (a `data:...;base64,` prefix is allowed); BadRequest if invalid."""
    payload = text.split(",", 1)[1] if text.startswith("data:") and "," in text else text
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not valid base64") from None


def encode_png_base64(pixels: np.ndarray) -> str:
    """Base64 PNG of a uint8 or uint16 (H, W) greyscale or uint8 (H, W, 3) RGB array."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
