"""Decoding that tells the truth: images and point clouds, called directly (no server).

Images: the header tells the size and the memory before decoding, decoding is no larger than
needed (and a resize of the smaller image gives nearly the pixels of a resize of the full one),
16-bit greyscale is scaled, MPO is read, animations and odd modes are refused. Point clouds: no
header allocates, and nothing a client sends gives anything but a ServiceError or a valid cloud.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from easerve.service.codecs.images import DecodedImage, decode_image, decode_opened, inspect_image
from easerve.service.codecs.ply import parse_ply
from easerve.service.codecs.pointclouds import points_from_file, points_from_npy
from easerve.service.errors import BadRequest, InvalidInput, PayloadTooLarge, ServiceError, UnsupportedMediaType

# Deterministic, bounded fuzzing: the same examples on every run, no timing deadline, no database.
# (Broken inputs make numpy and Pillow warn, e.g. about "Python 2" .npy headers: not a failure.)
QUIET = pytest.mark.filterwarnings("ignore::UserWarning")
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------------------------------------
# Images


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: list[bytes]) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB), each row unfiltered."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\0" + row for row in rows))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")


def smooth_picture(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    red = 127.5 + 127.5 * np.sin(x / width * 3.1) * np.cos(y / height * 2.3)
    return Image.fromarray(np.stack([red, 255 * x / width, 255 * y / height], axis=-1).astype(np.uint8))


def shapes_picture(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height), (30, 60, 90))
    draw = ImageDraw.Draw(image)
    rng = np.random.default_rng(0)
    for _ in range(40):
        left, top, side = int(rng.integers(0, width)), int(rng.integers(0, height)), int(rng.integers(10, width // 4))
        draw.ellipse([left, top, left + side, top + side], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw.rectangle([top, left, top + side // 2, left + side], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def rotated_jpeg(size: tuple[int, int], orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(smooth_picture(*size), "JPEG", exif=exif)


def test_inspect_reads_format_and_upright_size_from_the_header_alone():
    png = encoded(smooth_picture(64, 48), "PNG")
    header_only = png[: png.index(b"IDAT") + 20]  # pixel data cut off: only decoding notices
    header = inspect_image(header_only, 10_000).header
    assert (header.format, header.width, header.height) == ("PNG", 64, 48)
    assert header.working_bytes >= 64 * 48 * 4
    with pytest.raises(BadRequest, match="corrupt or truncated"):
        decode_image(header_only, 10_000)
    rotated = inspect_image(rotated_jpeg((80, 40)), 10_000).header
    assert (rotated.format, rotated.width, rotated.height) == ("JPEG", 40, 80)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_exif_orientation_turns_every_format_upright(fmt):
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees the other way
    data = encoded(smooth_picture(40, 20), fmt, exif=exif)
    header = inspect_image(data, 10_000).header
    assert (header.width, header.height) == (20, 40)
    assert decode_image(data, 10_000).image.size == (20, 40)
    assert decode_image(data, 10_000, (5, 5)).image.size == (10, 20)


def test_inspect_and_decode_agree_on_the_original_size():
    data = rotated_jpeg((300, 200))
    header = inspect_image(data, 10**6, (50, 50)).header
    decoded = decode_image(data, 10**6, (50, 50))
    assert decoded.original_size == (header.width, header.height) == (200, 300)


def test_an_image_is_parsed_once_from_inspection_to_pixels(monkeypatch):
    data = rotated_jpeg((300, 200))
    opened = inspect_image(data, 10**6, (50, 50))
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: pytest.fail("the image was opened again"))
    decoded = decode_opened(opened)
    assert decoded.original_size == (200, 300) and min(decoded.image.size) >= 50


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:])


def decompression_bomb_png() -> bytes:
    """A PNG header claiming 30000 x 30000 pixels, over Pillow's own bomb limit."""
    header = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))


REFUSED_IMAGES = [
    ("empty", b"", 10_000, BadRequest, "empty"),
    ("not an image", b"hello, not an image at all", 10_000, BadRequest, "cannot decode"),
    ("gif", encoded(Image.new("RGB", (8, 8)), "GIF"), 10_000, UnsupportedMediaType, "format GIF"),
    ("animated png", animated("PNG"), 10_000, UnsupportedMediaType, "animated PNG"),
    ("animated webp", animated("WEBP"), 10_000, UnsupportedMediaType, "animated WEBP"),
    ("over the pixel limit", encoded(Image.new("RGB", (101, 100)), "PNG"), 10_000, PayloadTooLarge, "10100 pixels"),
    ("decompression bomb", decompression_bomb_png(), 10**12, PayloadTooLarge, "decompression bomb"),
]


@pytest.mark.parametrize(
    ("data", "max_pixels", "error", "message"),
    [case[1:] for case in REFUSED_IMAGES],
    ids=[case[0] for case in REFUSED_IMAGES],
)
def test_inspect_and_decode_refuse_the_same_images_with_the_same_error(data, max_pixels, error, message):
    with pytest.raises(error, match=message):
        inspect_image(data, max_pixels)
    with pytest.raises(error, match=message):
        decode_image(data, max_pixels)
    with pytest.raises(error, match=message):
        decode_image(data, max_pixels, (8, 8))


def test_a_needed_size_under_one_pixel_is_the_callers_bug_not_a_bad_request():
    data = encoded(smooth_picture(8, 8), "PNG")
    for function in (inspect_image, decode_image):
        with pytest.raises(ValueError, match="positive"):
            function(data, 100, (0, 5))


def test_corrupt_pixel_data_is_a_bad_request():
    for fmt in ("PNG", "JPEG", "WEBP"):
        data = encoded(shapes_picture(120, 90), fmt)
        with pytest.raises(BadRequest):
            decode_image(data[: len(data) * 2 // 3], 10**6)


def test_jpeg_is_dct_scaled_to_no_less_than_twice_the_needed_size():
    data = encoded(smooth_picture(1600, 1200), "JPEG")
    decoded = decode_image(data, 10**7, (224, 224))
    assert decoded.original_size == (1600, 1200)
    assert decoded.image.size == (800, 600)  # 1/2: 1/4 would be 400 x 300, under 2 x 224 tall
    small = decode_image(data, 10**7, (50, 50))
    assert small.image.size == (200, 150)  # 1/8, the most DCT scaling gives
    header = inspect_image(data, 10**7, (50, 50)).header
    assert header.working_bytes < inspect_image(data, 10**7).header.working_bytes // 20


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_png_and_webp_are_reduced_after_decoding_keeping_the_aspect_ratio(fmt):
    data = encoded(smooth_picture(1203, 901), fmt)
    decoded = decode_image(data, 10**7, (100, 100))
    assert decoded.original_size == (1203, 901)
    width, height = decoded.image.size
    assert width >= 200 and height >= 200 and (width, height) == (301, 225)  # 1203 / 4, 901 / 4 rounded
    assert abs(width / height - 1203 / 901) < 0.01


def test_nothing_is_enlarged_when_the_original_is_smaller_than_needed():
    for fmt in ("PNG", "JPEG", "WEBP"):
        decoded = decode_image(encoded(smooth_picture(60, 40), fmt), 10**6, (224, 224))
        assert decoded.image.size == (60, 40)


def test_needed_size_is_read_in_upright_orientation():
    data = rotated_jpeg((1600, 800))  # stored landscape, shown portrait (800 x 1600)
    decoded = decode_image(data, 10**7, (100, 200))
    assert decoded.original_size == (800, 1600)
    width, height = decoded.image.size
    assert width >= 200 and height >= 400 and width < 800
    assert decoded.image.mode == "RGB"


PICTURES = {"smooth": smooth_picture, "shapes": shapes_picture}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("picture", sorted(PICTURES))
@pytest.mark.parametrize("needed", [(224, 224), (100, 60)])
def test_resizing_the_smaller_decoded_image_gives_nearly_the_pixels_of_resizing_the_full_one(fmt, picture, needed):
    data = encoded(PICTURES[picture](1203, 901), fmt, **({"quality": 95} if fmt != "PNG" else {}))
    full = decode_image(data, 10**7).image
    reduced = decode_image(data, 10**7, needed).image
    assert reduced.size[0] < full.size[0]
    expected = np.asarray(full.resize(needed, Image.Resampling.BILINEAR), dtype=np.float64)
    got = np.asarray(reduced.resize(needed, Image.Resampling.BILINEAR), dtype=np.float64)
    assert np.abs(got - expected).mean() < 2.0


def test_16_bit_greyscale_png_decodes_like_the_8_bit_picture():
    y, x = np.mgrid[0:40, 0:256]
    grey = ((x + y * 3) % 256).astype(np.uint8)
    eight = decode_image(encoded(Image.fromarray(grey), "PNG"), 10**5).image
    wide = Image.fromarray(grey.astype(np.uint16) * 257)
    assert wide.mode == "I;16"
    sixteen = decode_image(encoded(wide, "PNG"), 10**5).image
    assert sixteen.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(sixteen), np.asarray(eight))
    assert np.asarray(sixteen).max() == 255 and np.asarray(sixteen).min() == 0  # scaled, not clipped to white


def test_16_bit_greyscale_rounds_to_the_nearest_8_bit_value_and_survives_reduction():
    values = np.array([[0, 128, 129, 257, 32896, 65406, 65407, 65535]], dtype=np.uint16).repeat(4, axis=0)
    decoded = decode_image(encoded(Image.fromarray(values), "PNG"), 10**5).image
    assert np.asarray(decoded)[0, :, 0].tolist() == [0, 0, 1, 1, 128, 254, 255, 255]
    big = Image.fromarray((np.arange(400 * 300, dtype=np.uint32).reshape(300, 400) % 65536).astype(np.uint16))
    reduced = decode_image(encoded(big, "PNG"), 10**6, (50, 50))
    assert reduced.image.size == (133, 100) and reduced.image.mode == "RGB"


def test_16_bit_rgb_png_decodes_to_its_8_bit_colours():
    colours = np.array([[0, 0, 0], [255, 128, 1], [17, 200, 255]], dtype=np.uint16)
    row = (colours * 257).astype(">u2").tobytes()
    data = raw_png(3, 2, 16, 2, [row, row])
    decoded = decode_image(data, 100).image
    assert decoded.size == (3, 2)
    np.testing.assert_array_equal(np.asarray(decoded)[0], colours)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "I;16"])
def test_every_png_mode_becomes_rgb(mode):
    source = smooth_picture(30, 20).convert("L")
    image = Image.fromarray(np.asarray(source).astype(np.uint16) * 257) if mode == "I;16" else source.convert(mode)
    decoded = decode_image(encoded(image, "PNG"), 1_000)
    assert decoded.image.mode == "RGB" and decoded.image.size == (30, 20)


def test_cmyk_jpeg_becomes_rgb_of_the_same_colour():
    data = encoded(Image.new("RGB", (32, 32), (200, 40, 90)).convert("CMYK"), "JPEG", quality=95)
    for needed in (None, (4, 4)):
        pixel = np.asarray(decode_image(data, 10_000, needed).image)[2, 2].astype(int)
        assert np.abs(pixel - [200, 40, 90]).max() <= 6


def test_mpo_from_a_phone_camera_gives_its_primary_frame():
    primary, secondary = Image.new("RGB", (64, 48), (220, 20, 20)), Image.new("RGB", (64, 48), (20, 220, 20))
    data = encoded(primary, "MPO", save_all=True, append_images=[secondary])
    header = inspect_image(data, 10_000).header
    assert (header.format, header.width, header.height) == ("MPO", 64, 48)
    decoded = decode_image(data, 10_000)
    assert np.abs(np.asarray(decoded.image)[10, 10].astype(int) - [220, 20, 20]).max() <= 4
    assert decode_image(data, 10_000, (8, 6)).image.size == (16, 12)


def test_decoded_image_is_a_plain_rgb_image_with_its_original_size():
    decoded = decode_image(encoded(smooth_picture(40, 30), "WEBP"), 10_000)
    assert isinstance(decoded, DecodedImage)
    assert decoded.original_size == (40, 30) and decoded.image.mode == "RGB"
    decoded.image.resize((10, 10), Image.Resampling.BILINEAR)  # usable after decoding closed its source


def fake_open(image: Image.Image):
    def open_(fp, *args, **kwargs):
        image.format = "PNG"
        return image

    return open_


def test_float_pixels_are_refused_as_unsupported(monkeypatch):
    monkeypatch.setattr(Image, "open", fake_open(Image.new("F", (4, 4), 0.5)))
    with pytest.raises(UnsupportedMediaType, match="mode F"):
        inspect_image(b"float image", 100)
    with pytest.raises(UnsupportedMediaType, match="mode F"):
        decode_image(b"float image", 100)


def test_32_bit_greyscale_is_scaled_within_16_bits_and_refused_beyond(monkeypatch):
    in_range = Image.fromarray(np.array([[0, 257, 65535]], dtype=np.int32))
    assert in_range.mode == "I"
    monkeypatch.setattr(Image, "open", fake_open(in_range))
    assert np.asarray(decode_image(b"32-bit image", 100).image)[0, :, 0].tolist() == [0, 1, 255]
    monkeypatch.setattr(Image, "open", fake_open(Image.fromarray(np.array([[0, 70_000]], dtype=np.int32))))
    with pytest.raises(UnsupportedMediaType, match="outside 0..65535"):
        decode_image(b"32-bit image", 100)


def test_working_bytes_cover_the_full_decoding_and_jpeg_dct_scaling_saves_it():
    for fmt in ("PNG", "JPEG", "WEBP"):
        data = encoded(smooth_picture(800, 600), fmt)
        full = inspect_image(data, 10**6).header
        assert full.working_bytes >= 800 * 600 * 4  # at least the RGB image itself (stored as 4 bytes a pixel)
        if fmt != "JPEG":  # decoded at full size, then reduced: the small copy comes on top
            assert inspect_image(data, 10**6, (64, 64)).header.working_bytes >= full.working_bytes
    jpeg = encoded(smooth_picture(800, 600), "JPEG")
    assert inspect_image(jpeg, 10**6, (64, 64)).header.working_bytes < 800 * 600


def image_seeds() -> list[bytes]:
    picture = shapes_picture(48, 32)
    exif = Image.Exif()
    exif[0x0112] = 8
    return [
        encoded(picture, "PNG"),
        encoded(picture, "JPEG", exif=exif),
        encoded(picture, "JPEG", progressive=True),
        encoded(picture, "WEBP"),
        encoded(picture, "MPO", save_all=True, append_images=[picture]),
        encoded(picture.convert("P"), "PNG"),
        encoded(Image.fromarray(np.asarray(picture.convert("L")).astype(np.uint16) * 257), "PNG"),
    ]


IMAGE_SEEDS = image_seeds()


def mutated(seeds: list[bytes], tokens: list[bytes], keep: int = 8):
    """A seed file with a few random edits after its first `keep` bytes (its magic, so that the
    edits reach the parser behind it): bytes overwritten, cut, inserted, or the file truncated."""
    edit = st.tuples(
        st.sampled_from(["set", "cut", "insert", "token", "truncate"]),
        st.integers(0, 2**20),
        st.binary(min_size=1, max_size=8),
        st.sampled_from(tokens),
    )

    def apply(seed: bytes, edits: list) -> bytes:
        data = bytearray(seed)
        for kind, where, payload, token in edits:
            at = keep + where % max(len(data) - keep, 1)
            if kind == "set":
                data[at : at + len(payload)] = payload
            elif kind == "cut":
                del data[at : at + len(payload) * 4]
            elif kind == "insert":
                data[at:at] = payload
            elif kind == "token":
                data[at:at] = token
            else:
                del data[at:]
        return bytes(data)

    return st.builds(apply, st.sampled_from(seeds), st.lists(edit, min_size=1, max_size=4))


@QUIET
@FUZZ
@given(
    data=mutated(IMAGE_SEEDS, [b"\xff\xd8", b"\xff\xc0", b"IHDR", b"\x00\x00\xff\xff", b"VP8 "]),
    needed=st.sampled_from([None, (8, 8), (3, 40)]),
)
def test_fuzzed_images_give_a_service_error_or_an_rgb_image(data, needed):
    try:
        header = inspect_image(data, 10**5, needed).header
    except ServiceError as error:
        assert isinstance(error, (BadRequest, PayloadTooLarge, UnsupportedMediaType))
        with pytest.raises(type(error)):
            decode_image(data, 10**5, needed)
        return
    try:
        decoded = decode_image(data, 10**5, needed)
    except BadRequest:
        return  # corrupt pixel data: only decoding finds it
    assert decoded.image.mode == "RGB"
    assert decoded.original_size == (header.width, header.height)


# ---------------------------------------------------------------------------------------------
# Point clouds: .npy


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npy_with_header(header: str, data: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    text = header.encode("latin1")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack("<H", len(text)) + text + data


def test_npy_header_claiming_more_points_than_bytes_is_refused_before_allocating():
    lying = npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (10000000000, 3), }", b"\0" * 24)
    assert len(lying) < 200
    with pytest.raises(BadRequest, match="needs 240000000000 bytes"):
        points_from_file(lying, 10**12)
    with pytest.raises(BadRequest):
        points_from_file(lying, 100)


def test_npy_point_count_over_the_limit_is_refused_from_the_header():
    with pytest.raises(PayloadTooLarge, match="200 points"):
        points_from_npy(npy_bytes(np.zeros((200, 3), np.float32)), 100)


def test_npy_data_size_must_match_the_header_exactly():
    data = npy_bytes(np.zeros((4, 3)))
    for broken in (data[:-1], data + b"\0"):
        with pytest.raises(BadRequest, match="needs 96 bytes"):
            points_from_npy(broken, 100)


def test_npy_pickled_object_arrays_are_refused():
    data = npy_with_header("{'descr': '|O', 'fortran_order': False, 'shape': (2, 3), }", b"\0" * 48)
    with pytest.raises(BadRequest, match="Python objects"):
        points_from_npy(data, 100)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros(2, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")]),
        np.array([["a", "b", "c"]]),
        np.zeros((2, 3), dtype=complex),
        np.zeros((2, 3), dtype=bool),
        np.zeros((2, 3), dtype="datetime64[s]"),
    ],
    ids=["structured", "strings", "complex", "bool", "datetime"],
)
def test_npy_structured_and_non_numeric_dtypes_are_invalid_input(array):
    with pytest.raises(InvalidInput, match="must be numbers"):
        points_from_npy(npy_bytes(array), 100)


def test_npy_wrong_shapes_are_invalid_input():
    for array in (np.zeros(3), np.zeros((2, 4)), np.zeros((2, 3, 1)), np.zeros((0, 3))):
        with pytest.raises(InvalidInput):
            points_from_npy(npy_bytes(array), 100)


def test_npy_boolean_dimensions_in_the_header_count_as_integers():
    data = npy_with_header(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (True, 3), }", struct.pack("<3d", 1, 2, 3)
    )
    np.testing.assert_array_equal(points_from_npy(data, 10), [[1, 2, 3]])


def test_npy_fortran_order_big_endian_and_integers_are_read_correctly():
    points = np.arange(12, dtype=np.float64).reshape(4, 3)
    for array in (np.asfortranarray(points), points.astype(">f4"), points.astype("<i2"), points.astype(np.float16)):
        np.testing.assert_array_equal(points_from_npy(npy_bytes(array), 10), points.astype(np.float32))
    assert points_from_npy(npy_bytes(points), 10).dtype == np.float32


@pytest.mark.parametrize(
    "data",
    [
        npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (-2, 3), }"),
        npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (True, 3), }", b"\0" * 23),
        npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3)"),
        npy_with_header("{'descr': 'not a dtype', 'fortran_order': False, 'shape': (2, 3), }"),
        npy_with_header("[1, 2, 3]"),
        npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", version=(3, 0)),
        npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", version=(9, 9)),
        b"\x93NUMPY\x01\x00\xff\xff{'descr'",
        b"\x93NUMPY",
    ],
    ids=[
        "negative",
        "boolean",
        "unterminated",
        "bad descr",
        "not a dict",
        "version 3",
        "version 9",
        "short header",
        "magic",
    ],
)
def test_npy_malformed_headers_are_bad_requests(data):
    with pytest.raises(BadRequest):
        points_from_file(data, 100)


# ---------------------------------------------------------------------------------------------
# Point clouds: .ply

XYZ = b"property float x\nproperty float y\nproperty float z\n"


def ply(fmt: str, header_lines: bytes, body: bytes) -> bytes:
    return b"ply\nformat " + fmt.encode() + b" 1.0\n" + header_lines + b"end_header\n" + body


def test_ply_repeated_property_is_a_bad_request():
    data = ply("binary_little_endian", b"element vertex 1\n" + XYZ + b"property float x\n", b"\0" * 16)
    with pytest.raises(BadRequest, match="'x' more than once"):
        parse_ply(data, 10)


def test_ply_repeated_element_is_a_bad_request():
    data = ply("ascii", b"element vertex 1\n" + XYZ + b"element vertex 1\n" + XYZ, b"1 2 3\n4 5 6\n")
    with pytest.raises(BadRequest, match="twice"):
        parse_ply(data, 10)


@pytest.mark.parametrize("count", [b"-1", b"3.5", b"0x10", b"\xc2\xb2", b"1" * 40, b""])
def test_ply_garbage_element_counts_are_bad_requests(count):
    data = ply("ascii", b"element vertex " + count + b"\n" + XYZ, b"1 2 3\n")
    with pytest.raises(BadRequest, match="malformed PLY header"):
        parse_ply(data, 10)


def test_ply_huge_vertex_count_is_refused_before_parsing():
    data = ply("binary_little_endian", b"element vertex 99999999999999999999\n" + XYZ, b"\0" * 12)
    with pytest.raises(PayloadTooLarge, match="99999999999999999999 points"):
        parse_ply(data, 10**6)


def test_ply_binary_counts_are_checked_against_the_bytes_present():
    earlier = b"element junk 99999999999999999999\nproperty double a\n"
    with pytest.raises(BadRequest, match="truncated"):
        parse_ply(ply("binary_little_endian", earlier + b"element vertex 1\n" + XYZ, b"\0" * 12), 10)
    with pytest.raises(BadRequest, match="needs 120 bytes"):
        parse_ply(ply("binary_big_endian", b"element vertex 10\n" + XYZ, b"\0" * 119), 10)


def test_ply_ascii_counts_beyond_the_rows_present_are_bad_requests():
    earlier = b"element junk 99999999999999999999\nproperty double a\n"
    with pytest.raises(BadRequest, match="truncated"):
        parse_ply(ply("ascii", earlier + b"element vertex 1\n" + XYZ, b"1 2 3\n"), 10)
    with pytest.raises(BadRequest, match="truncated"):
        parse_ply(ply("ascii", b"element vertex 3\n" + XYZ, b"1 2 3\n4 5 6\n"), 10)


def test_ply_list_property_in_the_vertex_element_is_a_bad_request():
    data = ply("ascii", b"element vertex 1\n" + XYZ + b"property list uchar int links\n", b"1 2 3 1 0\n")
    with pytest.raises(BadRequest, match="no list property"):
        parse_ply(data, 10)


@pytest.mark.parametrize(
    "body", [b"1 2 3 4\n5 6\n", b"1 2\n3 4 5 6\n", b"1 \xff\xfe 3\n4 5 6\n", b"1 2 3\n\n", b"1 2 3\n# 4 5 6\n"]
)
def test_ply_ragged_or_non_numeric_ascii_rows_are_bad_requests(body):
    with pytest.raises(BadRequest):
        parse_ply(ply("ascii", b"element vertex 2\n" + XYZ, body), 10)


def test_ply_header_junk_is_a_bad_request():
    for junk in (b"element vertex 1\nproperty float\n", b"property float x\n", b"elephant 3\n", b"\xff\xfe\n"):
        with pytest.raises(BadRequest):
            parse_ply(ply("ascii", junk + XYZ, b"1 2 3\n"), 10)
    with pytest.raises(BadRequest, match="end_header"):
        parse_ply(b"ply\nformat ascii 1.0\nelement vertex 1\n" + XYZ, 10)
    with pytest.raises(BadRequest, match="format"):
        parse_ply(b"ply\nformat ascii 1.0\nformat ascii 1.0\nelement vertex 1\n" + XYZ + b"end_header\n1 2 3\n", 10)


def test_ply_non_ascii_comments_and_end_header_in_a_comment_are_fine():
    lines = b"comment caf\xc3\xa9 end_header\nelement vertex 1\n" + XYZ
    np.testing.assert_array_equal(parse_ply(ply("ascii", lines, b"1 2 3\n"), 10), [[1, 2, 3]])


def test_ply_big_endian_mixed_types_and_crlf_lines():
    header = (
        b"ply\r\nformat binary_big_endian 1.0\r\nelement vertex 2\r\nproperty int z\r\nproperty short y\r\n"
        b"property uchar x\r\nproperty double w\r\nend_header\r\n"
    )
    body = struct.pack(">ihBd", 3, 2, 1, 9.0) + struct.pack(">ihBd", -6, -5, 4, 9.0)
    np.testing.assert_array_equal(parse_ply(header + body, 10), [[1, 2, 3], [4, -5, -6]])


def test_ply_with_no_vertices_is_invalid_input_not_a_crash():
    with pytest.raises(InvalidInput, match="no points"):
        points_from_file(ply("binary_little_endian", b"element vertex 0\n" + XYZ, b""), 10)
    with pytest.raises(InvalidInput, match="no points"):
        points_from_file(ply("ascii", b"element vertex 0\n" + XYZ, b""), 10)


def test_ply_non_finite_coordinates_are_invalid_input():
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        points_from_file(ply("ascii", b"element vertex 1\n" + XYZ, b"1 nan 3\n"), 10)
    huge = ply(
        "binary_little_endian",
        b"element vertex 1\nproperty double x\nproperty double y\nproperty double z\n",
        struct.pack("<3d", 1.0, 1e300, 2.0),
    )
    with pytest.raises(InvalidInput, match="float32.s range"):
        points_from_file(huge, 10)


# ---------------------------------------------------------------------------------------------
# Point clouds: fuzzing


def cloud_seeds() -> list[bytes]:
    points = np.random.default_rng(0).normal(size=(5, 3))
    faces = b"element face 1\nproperty list uchar int vertex_indices\n"
    return [
        npy_bytes(points),
        npy_bytes(np.asfortranarray(points.astype(">f4"))),
        npy_bytes(points.astype(np.int16)),
        ply(
            "ascii", b"element note 1\nproperty int n\nelement vertex 2\n" + XYZ + faces, b"7\n1 2 3\n4 5 6\n3 0 1 1\n"
        ),
        ply(
            "binary_little_endian",
            b"element camera 1\nproperty uchar a\nelement vertex 2\n" + XYZ + faces,
            b"\x01" + struct.pack("<6f", 1, 2, 3, 4, 5, 6) + b"\x03" + struct.pack("<3i", 0, 1, 1),
        ),
        ply(
            "binary_big_endian",
            b"element vertex 1\nproperty double z\nproperty short y\nproperty uchar x\n",
            struct.pack(">dhB", 3, 2, 1),
        ),
    ]


CLOUD_TOKENS = [
    b"0",
    b"-1",
    b"99999999999999999999",
    b"\n",
    b" ",
    b"element vertex 3\n",
    b"property float x\n",
    b"property list uchar int x\n",
    b"end_header\n",
    b"'shape': (10000000000, 3), ",
    b"'descr': '|O', ",
    b"(",
    b"\xff\xfe",
]


def assert_valid_cloud_or_service_error(data: bytes, max_points: int) -> None:
    try:
        points = points_from_file(data, max_points)
    except (BadRequest, InvalidInput, PayloadTooLarge):
        return
    assert points.dtype == np.float32 and points.ndim == 2 and points.shape[1] == 3
    assert 1 <= points.shape[0] <= max_points and np.isfinite(points).all()


@QUIET
@FUZZ
@given(data=mutated(cloud_seeds(), CLOUD_TOKENS), max_points=st.sampled_from([1, 5, 1000]))
def test_fuzzed_npy_and_ply_files_give_a_valid_cloud_or_a_service_error(data, max_points):
    assert_valid_cloud_or_service_error(data, max_points)


COUNTS = ["0", "1", "2", "2", "3", "3", "99999999999999999999", "-1", "2.0"]
SCALARS = {"float": "f", "double": "d", "uchar": "B", "short": "h", "int": "i"}
EXTRA_PROPERTIES = ["", "", "", "property short w", "property list uchar int vertex_indices", "property float x"]
ASCII_VALUES = ["0", "1", "-2.5", "1e3", "255", "7", "0.5", "nan", "1e999", "x", "\xff"]


@st.composite
def ply_files(draw) -> bytes:
    """PLY files built from parts, mostly well-formed so that the body parsers are reached: a
    format, a vertex element (maybe with other elements around it, or twice), counts from
    plausible to absurd, properties in any order, and a body that mostly fits the header."""
    fmt = draw(st.sampled_from(["ascii", "ascii", "binary_little_endian", "binary_big_endian", "binary_middle"]))
    names = draw(st.lists(st.sampled_from(["camera", "face", "vertex"]), max_size=2, unique=True))
    names.insert(draw(st.integers(0, len(names))), "vertex")
    lines = [f"format {fmt} 1.0"]
    rows_bytes = []  # (count, properties) of each element, to write a fitting body
    for name in names:
        count = draw(st.sampled_from(COUNTS))
        properties = [f"property {draw(st.sampled_from(sorted(SCALARS)))} {axis}" for axis in "xyz"]
        properties = draw(st.permutations(properties + [draw(st.sampled_from(EXTRA_PROPERTIES))]))
        properties = [line for line in properties[: draw(st.sampled_from([4, 4, 4, 2]))] if line]
        lines += [f"element {name} {count}", *properties]
        rows_bytes.append((int(count) if count.isdigit() else 0, [line.split()[1] for line in properties]))
    body = b""
    for count, types in rows_bytes[:2] if draw(st.booleans()) else rows_bytes:
        for _ in range(min(count, 3)):
            if fmt == "ascii":
                tokens = [draw(st.sampled_from(ASCII_VALUES)) for _ in types]
                body += " ".join(tokens).encode("latin1") + draw(st.sampled_from([b"\n", b"\n", b"\r\n", b" 1\n"]))
            elif "list" not in types:
                body += struct.pack("<" + "".join(SCALARS[kind] for kind in types), *[1] * len(types))
    body = body[: max(len(body) - draw(st.sampled_from([0, 0, 0, 1, 5])), 0)] + draw(st.binary(max_size=3))
    return ("ply\n" + "".join(line + "\n" for line in lines) + "end_header\n").encode() + body


@QUIET
@FUZZ
@given(data=ply_files(), max_points=st.sampled_from([1, 1000]))
def test_fuzzed_ply_headers_give_a_valid_cloud_or_a_service_error(data, max_points):
    assert_valid_cloud_or_service_error(data, max_points)


@QUIET
@FUZZ
@given(
    descr=st.sampled_from(
        ["'<f8'", "'>i4'", "'|u1'", "'<f2'", "'|O'", "'<U3'", "[('x', '<f4')]", "('<f4', (3,))", "5"]
    ),
    fortran=st.sampled_from(["False", "True", "0"]),
    shape=st.lists(st.one_of(st.integers(-3, 10**12), st.booleans()), max_size=3).map(tuple),
    payload=st.binary(max_size=256),
)
def test_fuzzed_npy_headers_give_a_valid_cloud_or_a_service_error(descr, fortran, shape, payload):
    header = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    assert_valid_cloud_or_service_error(npy_with_header(header, payload), 1000)


# -- chunk and marker floods ------------------------------------------------------------------


def _png(size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _padded_png(chunks: int) -> bytes:
    """A valid 64x64 PNG with `chunks` empty ancillary chunks before its image data."""
    png = _png()
    header_end = 8 + 25  # signature, IHDR
    return png[:header_end] + _png_chunk(b"zzZz") * chunks + png[header_end:]


def _padded_jpeg(comments: int) -> bytes:
    """A valid 64x64 JPEG with `comments` empty COM marker segments after its start."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    return jpeg[:2] + b"\xff\xfe\x00\x02" * comments + jpeg[2:]


@pytest.mark.parametrize("padded", [_padded_png, _padded_jpeg], ids=["png", "jpeg"])
def test_an_image_padded_with_more_segments_than_an_encoder_writes_is_refused_before_pillow_reads_it(padded):
    assert decode_image(padded(200), 10_000).image.size == (64, 64)  # some padding is fine
    for count in (1025, 200_000):
        with pytest.raises(BadRequest, match="re-encode"):
            inspect_image(padded(count), 10_000)
        with pytest.raises(BadRequest, match="re-encode"):
            decode_image(padded(count), 10_000)


@pytest.mark.parametrize("padded", [_padded_png, _padded_jpeg], ids=["png", "jpeg"])
def test_the_segment_count_stops_past_its_limit_so_its_cost_is_bounded(padded):
    from easerve.service.codecs.image_headers import metadata_segments
    from easerve.service.codecs.uploads import few_segments

    assert metadata_segments(padded(5000), stop_after=10) == 11
    assert metadata_segments(padded(0)) < 10
    assert few_segments([padded(0)] * 4, 64)
    assert not few_segments([padded(20)] * 4, 64)  # 4 x (20 + its own) in all
    assert not few_segments([padded(200_000)], 64)  # past the per-image cap too: stopped, not refused here


def test_a_jpegs_scans_after_its_first_count_as_segments():
    """Every scan is another pass over the image: a progressive JPEG's few keep it plain, and a
    JPEG of many tiny scans (few segments before the first) is costly, or refused."""
    from easerve.service.codecs.image_headers import metadata_segments
    from easerve.service.codecs.uploads import PLAIN_SEGMENTS_PER_IMAGE, few_segments

    picture = shapes_picture(64, 64)
    baseline, progressive = encoded(picture, "JPEG"), encoded(picture, "JPEG", progressive=True)
    scans = progressive.count(b"\xff\xda")
    assert scans > 1
    before_first_scan = progressive[: progressive.index(b"\xff\xda")] + b"\xff\xda"
    assert metadata_segments(progressive) == metadata_segments(before_first_scan) + scans - 1
    assert few_segments([progressive], PLAIN_SEGMENTS_PER_IMAGE)
    many = baseline[:-2] + (b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\x00" * 4) * 500 + baseline[-2:]
    assert metadata_segments(many) > 500
    assert not few_segments([many], PLAIN_SEGMENTS_PER_IMAGE)
    with pytest.raises(BadRequest, match="re-encode"):
        inspect_image(baseline[:-2] + (b"\xff\xda\x00\x02") * 2000 + baseline[-2:], 10_000)


def test_more_metadata_bytes_before_the_pixels_than_any_encoder_writes_is_refused():
    png = _png()
    header_end = 8 + 25
    profile_sized = png[:header_end] + _png_chunk(b"zzZz", b"\0" * (2 << 20)) + png[header_end:]
    assert decode_image(profile_sized, 10_000).image.size == (64, 64)  # a few MB, as ICC profiles run
    bloated = png[:header_end] + _png_chunk(b"zzZz", b"\0" * (17 << 20)) + png[header_end:]
    with pytest.raises(BadRequest, match="MiB in chunks or marker segments"):
        inspect_image(bloated, 10_000)
    jpeg = _padded_jpeg(0)
    comment = b"\xff\xfe" + struct.pack(">H", 65535) + b"\0" * 65533
    with pytest.raises(BadRequest, match="MiB in chunks or marker segments"):
        inspect_image(jpeg[:2] + comment * 300 + jpeg[2:], 10_000)  # 300 segments: under the count cap


def test_a_large_png_in_many_image_data_chunks_still_decodes():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 800, 3), np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=0)
    png = buffer.getvalue()
    assert png.count(b"IDAT") > 20
    assert decode_image(png, 10_000_000).image.size == (800, 600)


def test_a_flood_of_tiny_image_data_chunks_is_refused():
    png = _png()
    header_end = 8 + 25
    flood = _png_chunk(b"IDAT") * (1024 + len(png) + 50_000)
    with pytest.raises(BadRequest, match="re-encode"):
        inspect_image(png[:header_end] + flood + png[header_end:], 10_000)
