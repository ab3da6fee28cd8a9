"""Image bytes in (PNG, JPEG, WebP, MPO; decompression bombs refused), PNG out.

In: the bytes of one still image. `inspect_image` opens it, reads its header only and tells the upright size
and the memory decoding it will take; `decode_image` returns it as an upright RGB `PIL.Image`,
decoded no larger than the caller needs (JPEG/MPO by DCT scaling, then all formats by a box filter,
`Image.reduce`'s averaging over the picture's exact extent, right after decoding, which frees the
full-size copy). Out: `encode_png_base64` turns a mask or picture array into base64 PNG (codecs/png.py).

The pixel limit is checked from the header, before a single pixel is decoded, and does not
depend on Pillow's process-wide `Image.MAX_IMAGE_PIXELS` (Pillow's own bomb error, raised
above twice that, is mapped to the same 413). Every error a client's bytes can cause is a
`ServiceError`: 400 (corrupt), 413 (too large) or 415 (a format, mode or animation not taken).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from easerve.service.codecs.image_headers import check_segments
from easerve.service.codecs.png import encode_png
from easerve.service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "MPO")
# Pillow holds an RGB pixel in 4 bytes (a padding byte after the three channels).
PILLOW_RGB_BYTES = 4
# What an image file may hold besides its pixels (headers, tables, a colour profile) and still be
# called plainly encoded (`OpenedImage.plainly_encoded`).
_ENCODED_HEADERS_BYTES = 16 * 1024
# JPEG and MPO (a JPEG whose first frame is the primary image) decode at 1/2..1/8 scale for free.
_DCT_FORMATS = ("JPEG", "MPO")
# Decoded at least this many times the needed size on each side, so that the caller's bilinear
# resize of the smaller image gives (nearly) the pixels a resize of the full image would.
_QUALITY_MARGIN = 2

# Modes held as greyscale ("L") while decoding, modes held as RGB, and 16/32-bit greyscale,
# mapped to 8 bits by value / 257. Any other mode (float "F", ...) is refused.
_GREY_MODES = ("1", "L", "LA")
_COLOUR_MODES = ("P", "PA", "RGB", "RGBA", "CMYK", "YCbCr")
_WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# Bytes per pixel of Pillow's in-memory storage of each accepted mode (RGB is stored as 4 bytes).
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# Bytes a pixel the decoder holds besides Pillow's image: libwebp's two RGBA canvases (the animation
# decoder that Pillow uses for stills too), its YUV planes and the RGBA bytes it hands over.
_DECODER_BYTES = {"WEBP": 4 + 4 + 2 + 4}
# 16-bit greyscale is scaled to 8 bits in bands of at most this many pixels.
_BAND_PIXELS = 1 << 20
_BAND_BYTES = _BAND_PIXELS * (4 + 4 + 4 + 1)  # the band's pixels, as uint32, the rounded sum, uint8

# Errors Pillow (and the parsers under it) raise on bytes that are not a well-formed image.
_MALFORMED = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
)

# EXIF orientation -> the transposition that makes the image upright (as `ImageOps.exif_transpose`).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = (
    Image.Transpose.TRANSPOSE,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSVERSE,
    Image.Transpose.ROTATE_90,
)


# The size the caller will resize to: fixed, or chosen from the upright original (width, height).
Needed = tuple[int, int] | Callable[[int, int], tuple[int, int]] | None


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an image says, before any pixel is decoded."""

    format: str  # "PNG", "JPEG", "WEBP" or "MPO"
    width: int  # upright (EXIF orientation applied) original size
    height: int
    working_bytes: int  # estimated peak memory of `decode_image` with the same `needed`, conversion to RGB included


@dataclass(frozen=True)
class DecodedImage:
    """An image decoded to RGB, upright, possibly smaller than the original (see `decode_image`)."""

    image: Image.Image
    original_size: tuple[int, int]  # (width, height), upright


@dataclass(frozen=True)
class _Plan:
    header: ImageHeader
    upright: Image.Transpose | None  # the transposition that makes the stored image upright
    # After decoding (and the DCT scaling of a JPEG): the part of the decoded image that is the
    # picture (a JPEG scaled 1/s has ceil(W/s) columns, the last one partly padding) and the size
    # it is box-filtered to; None to keep the decoded image as it is.
    content_box: tuple[float, float, float, float]
    shrink_to: tuple[int, int] | None


@dataclass(frozen=True, eq=False)
class OpenedImage:
    """An image whose header is read and whose decoding is planned (`inspect_image`); its pixels
    are decoded later by `decode_opened`, from the same parse."""

    image: Image.Image
    plan: _Plan
    encoded_bytes: int  # the size of the file it was opened from

    @property
    def header(self) -> ImageHeader:
        return self.plan.header

    @property
    def plainly_encoded(self) -> bool:
        """Whether the file holds no more bytes than its pixels do raw (RGB), and a few headers:
        decoding it costs what its pixels do. (More is possible, e.g. a PNG of empty deflate
        blocks, and still decodes, at a cost its size gives away.)"""
        header = self.plan.header
        return self.encoded_bytes <= PILLOW_RGB_BYTES * header.width * header.height + _ENCODED_HEADERS_BYTES

    @property
    def original_size(self) -> tuple[int, int]:
        """(width, height), upright, as its header says (a `DecodedImage`'s too)."""
        return self.plan.header.width, self.plan.header.height


def inspect_image(data: bytes, max_pixels: int, needed: Needed = None) -> OpenedImage:
    """The image in `data` opened, its format, upright size and decoding memory read from its
    header only (`header`), its decoding planned: the one parse of the image.

    `needed` is as for `decode_image`, and `working_bytes` is the peak memory of that decoding.
    Raises what `decode_image` raises for the format and size: BadRequest (empty, not an image,
    corrupt header), UnsupportedMediaType (a format outside SUPPORTED_FORMATS, an animation, a
    pixel mode that has no faithful RGB form such as float), PayloadTooLarge (more than
    `max_pixels` pixels). Corrupt pixel data is only found by `decode_opened`.
    """
    if not callable(needed):
        _check_needed(needed)
    image = _open(data)
    try:
        return OpenedImage(image, _plan(image, max_pixels, needed), len(data))
    except _MALFORMED as error:
        image.close()
        raise BadRequest(f"corrupt {image.format} image header: {error}") from None
    except BaseException:
        image.close()
        raise


def decode_image(data: bytes, max_pixels: int, needed: Needed = None) -> DecodedImage:
    """The image in `data` as RGB, upright (EXIF orientation applied), decoded no larger than needed.

    `needed` is the (width, height), upright, of the smallest size the caller will resize the image
    to; each side of the returned image is then at least min(needed side, original side), about
    twice the needed size where the original is larger (aspect ratio kept), so that a bilinear
    resize to `needed` gives nearly the pixels a resize of the full image would; `needed` may also
    be a function of the upright (width, height), read from the header. Without `needed` the
    image is decoded at full size. 16-bit greyscale is mapped to 8 bits by value / 257; an MPO
    (phone camera JPEG) gives its first, primary, frame.

    BadRequest: empty, not an image, corrupt or truncated. UnsupportedMediaType: a format outside
    SUPPORTED_FORMATS, an animated PNG or WebP (more than one frame), a pixel mode without a
    faithful RGB form (float, 32-bit integers outside 0..65535). PayloadTooLarge: more than
    `max_pixels` pixels (checked from the header, before decoding). ValueError: `needed` has a
    side under 1 (a caller's bug, not the client's).
    """
    return decode_opened(inspect_image(data, max_pixels, needed))


def decode_opened(opened: OpenedImage) -> DecodedImage:
    """`decode_image` of an image `inspect_image` opened (BadRequest for corrupt pixel data)."""
    image, plan = opened.image, opened.plan
    try:
        image.load()
        working = _working_copy(image)
        if plan.shrink_to is not None:
            # a box filter over exactly the picture's extent: `Image.reduce` when the factor divides
            # the size, and no shift of the picture when it does not
            working = working.resize(plan.shrink_to, Image.Resampling.BOX, box=plan.content_box)
        if working is not image:
            image.close()  # frees the decoded frame before the smaller copies are made
        if plan.upright is not None:
            working = working.transpose(plan.upright)
        if working.mode != "RGB":
            working = working.convert("RGB")
    except _MALFORMED as error:
        image.close()
        raise BadRequest(f"corrupt or truncated {image.format} image: {error}") from None
    except BaseException:
        image.close()
        raise
    if working is not image:
        image.close()
    # else: a full-size, upright RGB image, handed over as decoded (its pixels are read already)
    return DecodedImage(working, (plan.header.width, plan.header.height))


def _check_needed(needed: tuple[int, int] | None) -> None:
    if needed is not None and (len(needed) != 2 or min(needed) < 1):
        raise ValueError(f"needed must be a (width, height) of positive sides, got {needed}")


def _open(data: bytes) -> Image.Image:
    """The opened (not decoded) image; BadRequest/PayloadTooLarge/UnsupportedMediaType as documented."""
    if not data:
        raise BadRequest("empty image: the body or file has 0 bytes")
    check_segments(data)
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise PayloadTooLarge(f"image refused as a decompression bomb: {error}") from None
    except _MALFORMED:
        raise BadRequest(f"cannot decode the image: not a {', '.join(SUPPORTED_FORMATS)} file, or corrupt") from None
    try:
        _check_kind(image)
    except BaseException:
        image.close()
        raise
    return image


def _check_kind(image: Image.Image) -> None:
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedMediaType(
            f"unsupported image format {image.format}; send one of {', '.join(SUPPORTED_FORMATS)}"
        )
    try:
        frames = getattr(image, "n_frames", 1)
    except _MALFORMED as error:
        raise BadRequest(f"corrupt {image.format} image header: {error}") from None
    if frames > 1 and image.format != "MPO":
        raise UnsupportedMediaType(
            f"animated {image.format} images ({frames} frames) are not supported; send a still image"
        )
    if image.mode not in _GREY_MODES + _COLOUR_MODES + _WIDE_GREY_MODES:
        raise UnsupportedMediaType(f"{image.format} images of pixel mode {image.mode} are not supported")


def _plan(image: Image.Image, max_pixels: int, needed: Needed) -> _Plan:
    """Checks the size, sets up the DCT scaling of a JPEG and works out what decoding will hold."""
    stored_width, stored_height = image.size
    if stored_width * stored_height > max_pixels:
        raise PayloadTooLarge(
            f"image of {stored_width}x{stored_height} = {stored_width * stored_height} pixels "
            f"is over the limit of {max_pixels} pixels"
        )
    upright = _UPRIGHT.get(_orientation(image))
    swapped = upright in _SWAPS_SIDES
    width, height = (stored_height, stored_width) if swapped else (stored_width, stored_height)
    if callable(needed):
        needed = needed(width, height)
    stored_mode = image.mode
    content_box = (0.0, 0.0, float(stored_width), float(stored_height))
    shrink_to = None
    if needed is not None:
        need_width, need_height = (needed[1], needed[0]) if swapped else needed
        target = (_QUALITY_MARGIN * need_width, _QUALITY_MARGIN * need_height)
        if image.format in _DCT_FORMATS:
            drafted = image.draft("RGB", target)  # DCT scaling by 1/2..1/8, keeping the size >= target
            if drafted is not None:
                content_box = tuple(float(side) for side in drafted[1])
        content_width, content_height = content_box[2], content_box[3]
        factor = max(1, min(int(content_width) // target[0], int(content_height) // target[1]))
        size = (max(1, round(content_width / factor)), max(1, round(content_height / factor)))
        if size != image.size or content_box != (0.0, 0.0, *map(float, image.size)):
            shrink_to = size
    decoded_pixels = image.size[0] * image.size[1]
    output_width, output_height = shrink_to or image.size

    working_mode_bytes = 1 if stored_mode in _GREY_MODES + _WIDE_GREY_MODES else PILLOW_RGB_BYTES
    decoded_bytes = decoded_pixels * _STORED_BYTES.get(image.mode, 4)
    decoding = decoded_bytes + decoded_pixels * _DECODER_BYTES.get(image.format, 0)
    if image.format in _DCT_FORMATS and image.info.get("progressive"):
        # a progressive JPEG holds all its DCT coefficients (2 bytes a sample) at full size while decoding
        decoding += stored_width * stored_height * 2 * _samples_per_pixel(image)
    held = [decoding]
    alive = decoded_bytes
    if image.mode not in ("L", "RGB"):
        alive += decoded_pixels * working_mode_bytes + (_BAND_BYTES if image.mode in _WIDE_GREY_MODES else 0)
        held.append(alive)
    if shrink_to is not None:
        # the box filter's horizontal pass (output width x decoded height), then the output
        held.append(alive + (output_width * image.size[1] + output_width * output_height) * working_mode_bytes)
    # after the decoded frame is freed: the working copy and its upright copy, or it and its RGB copy
    converts = working_mode_bytes == 1
    tail = max(working_mode_bytes if upright is not None else 0, 4 if converts else 0)
    held.append(output_width * output_height * (working_mode_bytes + tail))
    header = ImageHeader(image.format, width, height, math.ceil(max(held)))
    return _Plan(header, upright, content_box, shrink_to)


def _samples_per_pixel(image: Image.Image) -> float:
    """Samples a pixel of a JPEG holds, its chroma subsampling counted (3 for 4:4:4, 1.5 for 4:2:0)."""
    layers = getattr(image, "layer", None) or []
    factors = [(h, v) for _, h, v, _ in layers if h > 0 and v > 0]
    if not factors:
        return float(Image.getmodebands(image.mode))
    largest = max(h for h, _ in factors) * max(v for _, v in factors)
    return sum(h * v for h, v in factors) / largest


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation in the image's header (1 if none or unreadable)."""
    try:
        # The base class's getexif reads the EXIF found in the header; PNG's own would decode the
        # pixels to look for an eXIf chunk after them.
        value = Image.Image.getexif(image).get(ExifTags.Base.Orientation, 1)
    except _MALFORMED:
        return 1
    return value if isinstance(value, int) else 1


def _working_copy(image: Image.Image) -> Image.Image:
    """The decoded image as "L" (greyscale modes) or "RGB" (the others), the modes that can be reduced."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in _WIDE_GREY_MODES:
        return _wide_grey_to_l(image)
    return image.convert("L" if image.mode in _GREY_MODES else "RGB")


def _wide_grey_to_l(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit holding 0..65535) greyscale as 8-bit "L": value / 257, rounded, in bands."""
    width, height = image.size
    grey = np.empty((height, width), dtype=np.uint8)
    rows = max(1, _BAND_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        band = np.asarray(image.crop((0, top, width, min(height, top + rows))))
        if image.mode == "I" and band.size and (band.min() < 0 or band.max() > 65535):
            raise UnsupportedMediaType("32-bit greyscale images with values outside 0..65535 are not supported")
        grey[top : top + rows] = (band.astype(np.uint32) + 128) // 257
    return Image.fromarray(grey)


def decode_base64(text: str, what: str) -> bytes:
    """The bytes of a base64 string (a `data:...;base64,` prefix is allowed); BadRequest if invalid."""
    payload = text.split(",", 1)[1] if text.startswith("data:") and "," in text else text
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not valid base64") from None


def encode_jpeg_base64(pixels: np.ndarray, quality: int) -> str:
    """Base64 JPEG of a uint8 (H, W, 3) RGB array at `quality`."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def encode_png_base64(pixels: np.ndarray) -> str:
    """Base64 PNG of a bool (H, W) mask (1-bit), a uint8 or uint16 (H, W) greyscale or a uint8
    (H, W, 3) RGB array."""
    return base64.b64encode(encode_png(pixels)).decode("ascii")
