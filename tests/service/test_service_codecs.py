"""Decoders, encoders and mappings on their own: PLY variants, image orientation, point resampling, PNG out."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from easerve.artifacts.manifest import Manifest
from easerve.service.codecs.images import decode_image
from easerve.service.codecs.ply import parse_ply
from easerve.service.errors import BadRequest
from easerve.service.tasks.pointcloud import nearest_kept, sample_cloud


def test_ply_vertices_after_a_fixed_size_element_in_binary():
    header = (
        b"ply\r\nformat binary_little_endian 1.0\r\nelement camera 2\r\nproperty float f\r\n"
        b"element vertex 2\r\nproperty uchar tag\r\nproperty float z\r\nproperty float y\r\nproperty float x\r\n"
        b"end_header\r\n"
    )
    cameras = struct.pack("<2f", 1.0, 2.0)
    vertices = struct.pack("<B3f", 1, 3.0, 2.0, 1.0) + struct.pack("<B3f", 2, 6.0, 5.0, 4.0)
    np.testing.assert_array_equal(parse_ply(header + cameras + vertices, 10), [[1, 2, 3], [4, 5, 6]])


def test_ply_ascii_skips_rows_of_earlier_elements():
    body = (
        b"ply\nformat ascii 1.0\nelement note 1\nproperty int n\n"
        b"element vertex 1\nproperty float x\nproperty float y\nproperty float z\nend_header\n7\n1 2 3\n"
    )
    np.testing.assert_array_equal(parse_ply(body, 10), [[1, 2, 3]])


def test_ply_list_element_before_binary_vertices_is_refused():
    body = (
        b"ply\nformat binary_little_endian 1.0\nelement face 1\nproperty list uchar int i\n"
        b"element vertex 1\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    )
    with pytest.raises(BadRequest, match="list"):
        parse_ply(body + b"\0" * 64, 10)


def test_images_are_turned_upright_by_their_exif_orientation():
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert decode_image(buffer.getvalue(), 10_000).image.size == (20, 40)


def test_greyscale_and_alpha_images_become_rgb():
    for mode in ("L", "RGBA", "P"):
        buffer = io.BytesIO()
        Image.new(mode, (5, 5)).save(buffer, format="PNG")
        assert decode_image(buffer.getvalue(), 100).image.mode == "RGB"


def manifest_with_points(num_points: int) -> Manifest:
    return Manifest.model_validate(
        {
            "name": "m",
            "task": "pointcloud-segmentation",
            "attention": "ea",
            "arch": "a",
            "inputs": [{"name": "points", "dtype": "float32", "shape": ["batch", "points", 3]}],
            "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", "points", 2]}],
            "preprocessing": {"kind": "points", "num_points": num_points},
            "labels": ["a", "b"],
            "max_batch_size": 1,
            "onnx": {"path": "model.onnx", "sha256": "0", "bytes": 0},
            "opset": 17,
        }
    )


def test_a_large_cloud_is_subsampled_centred_and_scaled_to_the_unit_sphere():
    points = np.random.default_rng(0).normal(10.0, 3.0, (1000, 3)).astype(np.float32)
    cloud = sample_cloud(points, manifest_with_points(64))
    fed = cloud.inputs["points"][0]
    assert fed.shape == (64, 3) and len(set(cloud.kept.tolist())) == 64
    np.testing.assert_allclose(fed.mean(axis=0), 0, atol=1e-5)
    assert np.linalg.norm(fed, axis=1).max() == pytest.approx(1.0, abs=1e-5)


def test_a_small_cloud_is_padded_with_repeats_and_keeps_its_points_first():
    points = np.arange(15, dtype=np.float32).reshape(5, 3)
    cloud = sample_cloud(points, manifest_with_points(12))
    assert cloud.kept[:5].tolist() == [0, 1, 2, 3, 4] and cloud.kept.max() < 5


def test_every_point_maps_to_its_nearest_kept_point():
    points = np.random.default_rng(1).uniform(-1, 1, (3000, 3)).astype(np.float32)
    cloud = sample_cloud(points, manifest_with_points(100))
    nearest = nearest_kept(points, cloud)
    kept_points = points[cloud.kept]
    brute = np.linalg.norm(points[:, None] - kept_points[None], axis=2).argmin(axis=1)
    assert (nearest == brute).mean() > 0.999
    assert (nearest[cloud.kept] == np.arange(100)).all()


def test_a_kept_point_is_its_own_nearest_even_beside_a_twin():
    """Every point twice: a kept point takes its own position, never its kept twin's."""
    single = np.random.default_rng(3).uniform(-1, 1, (200, 3)).astype(np.float32)
    points = np.concatenate([single, single])
    cloud = sample_cloud(points, manifest_with_points(300))
    nearest = nearest_kept(points, cloud)
    assert (nearest[cloud.kept] == np.arange(300)).all()
    kept = np.isin(np.arange(400), cloud.kept)
    twin_kept = np.roll(kept, 200) & ~kept  # left out, its twin kept: the twin is its nearest
    assert twin_kept.any() and (points[cloud.kept[nearest[twin_kept]]] == points[twin_kept]).all()


@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize(("width", "height"), [(37, 23), (300, 200), (1000, 640)])
def test_the_mask_is_the_argmax_of_the_logits_resized_as_torch_resizes_them(smooth, width, height):
    import torch
    import torch.nn.functional as F

    from easerve.service.tasks.segmentation import mask_at

    rng = np.random.default_rng(width)
    logits = torch.from_numpy(rng.standard_normal((1, 7, 16, 16)).astype(np.float32))
    if smooth:  # like a model's: classes in regions, so most output rows fall between equal classes
        logits = F.interpolate(logits, size=(128, 128), mode="bilinear", align_corners=False)
    resized = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)[0]
    expected = resized.argmax(0).numpy()
    mask = mask_at(logits[0].numpy(), width, height)
    assert mask.shape == (height, width)
    # Float rounding may flip a pixel where two classes are within a rounding error of each other.
    assert (mask == expected).mean() > 0.9999


def test_the_overlay_painted_with_pillows_palette_equals_the_colours_looked_up_one_by_one():
    from easerve.service.tasks.segmentation import class_colours, paint_overlay

    rng = np.random.default_rng(3)
    picture = Image.fromarray(rng.integers(0, 256, (37, 53, 3), np.uint8))
    labels = rng.integers(0, 21, (37, 53)).astype(np.uint8)
    colours = class_colours(21)
    fast, slow = picture.copy(), picture.copy()
    paint_overlay(fast, labels, colours, 0.4)  # uint8 labels: Pillow's palette
    paint_overlay(slow, labels.astype(np.uint16), colours, 0.4)  # the general path
    fast, slow = np.asarray(fast), np.asarray(slow)
    np.testing.assert_array_equal(fast, slow)
    background = labels == 0
    np.testing.assert_array_equal(fast[background], np.asarray(picture)[background])
    blended = np.asarray(picture)[~background] * 0.6 + colours[labels[~background]] * 0.4
    assert np.abs(fast[~background] - blended).max() <= 1.5


def test_an_overlay_smaller_than_the_image_takes_its_labels_from_the_mask_by_nearest_neighbour():
    from easerve.service.tasks.segmentation import _nearest

    mask = np.random.default_rng(4).integers(0, 200, (90, 120)).astype(np.uint8)
    small = _nearest(mask, (40, 30))
    assert small.shape == (30, 40) and set(np.unique(small)) <= set(np.unique(mask))
    np.testing.assert_array_equal(_nearest(mask.astype(np.uint16), (40, 30)), small)  # over 256 classes alike


def _drawn_at_once(picture: Image.Image, labels: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """The overlay drawn the plain way: the whole picture resized, then painted."""
    from easerve.service.tasks.segmentation import paint_overlay

    whole = picture.resize((labels.shape[1], labels.shape[0]), Image.Resampling.BILINEAR)
    paint_overlay(whole, labels, colours, alpha)
    return np.asarray(whole)


@pytest.mark.parametrize("bands", [2, 3])
@pytest.mark.parametrize("size", [(517, 389), (830, 610)], ids=["resized", "own size"])
def test_an_overlay_drawn_in_bands_is_the_one_drawn_at_once(monkeypatch, bands, size):
    from easerve.service.tasks import segmentation

    monkeypatch.setattr(segmentation, "band_count", lambda nbytes, least: bands)
    rng = np.random.default_rng(bands)
    picture = Image.fromarray(rng.integers(0, 256, (61, 83, 3), np.uint8)).resize((830, 610))
    before = np.asarray(picture).copy()
    labels = np.asarray(Image.fromarray(rng.integers(0, 4, (8, 8), np.uint8)).resize(size, Image.Resampling.NEAREST))
    colours = segmentation.class_colours(4)
    drawn = segmentation.drawn_overlay(picture, labels, colours, 0.5)
    expected = _drawn_at_once(picture, labels, colours, 0.5)
    assert drawn.shape == expected.shape == (size[1], size[0], 3)
    difference = np.abs(drawn.astype(np.int16) - expected)
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01
    np.testing.assert_array_equal(np.asarray(picture), before)  # the decoded picture is not painted over


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_an_overlay_fewer_rows_high_than_bands_is_drawn(monkeypatch, rows):
    """A very wide, flat picture: its pixels call for more bands than it has rows."""
    from easerve.service.tasks import segmentation

    monkeypatch.setattr(segmentation, "band_count", lambda nbytes, least: 4)
    picture = Image.fromarray(np.random.default_rng(rows).integers(0, 256, (9, 400, 3), np.uint8))
    labels = np.ones((rows, 300), np.uint8)
    colours = segmentation.class_colours(2)
    drawn = segmentation.drawn_overlay(picture, labels, colours, 0.5)
    np.testing.assert_allclose(drawn, _drawn_at_once(picture, labels, colours, 0.5), atol=1)


def test_a_mask_with_many_classes_of_a_wide_image_stays_in_its_memory_budget(monkeypatch):
    """Bands of one row each already fill the budget: the rows are not also spread over workers."""
    from easerve.service.tasks import segmentation

    monkeypatch.setattr(segmentation, "_BAND_VALUES", 300 * 50)
    monkeypatch.setattr(segmentation, "band_count", lambda nbytes, least: 4)
    held = []
    original = segmentation.in_bands
    monkeypatch.setattr(segmentation, "in_bands", lambda work, workers: held.append(workers) or original(work, workers))
    logits = np.random.default_rng(5).standard_normal((300, 4, 4)).astype(np.float32)
    mask = segmentation.mask_at(logits, 60, 20)  # 300 classes x 60 columns: more than the budget
    assert held == [1] and mask.shape == (20, 60) and mask.dtype == np.uint16


def test_an_overlay_with_more_colours_than_a_palette_holds_is_painted():
    """An instance overlay has a colour per instance (`top_k` up to 1000): a palette holds 256."""
    from easerve.service.tasks.segmentation import class_colours, paint_overlay

    picture = Image.new("RGB", (20, 10), "white")
    labels = np.arange(200, dtype=np.uint8).reshape(10, 20)
    paint_overlay(picture, labels, class_colours(300), 1.0)
    painted = np.asarray(picture)
    np.testing.assert_array_equal(painted[labels > 0], class_colours(300)[labels[labels > 0]])


@pytest.mark.parametrize(("dtype", "classes"), [(np.uint8, 7), (np.uint8, 256), (np.uint16, 300)])
def test_class_counts_are_the_pixels_of_each_class(dtype, classes):
    from easerve.service.tasks.segmentation import class_counts

    mask = np.random.default_rng(classes).integers(0, classes, (41, 67)).astype(dtype)
    counts = class_counts(mask, classes)
    assert counts == [int((mask == c).sum()) for c in range(classes)]


def _png_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [
        rng.integers(0, 2, (13, 29)).astype(bool),  # 1-bit rows padded to whole bytes
        rng.integers(0, 2, (1, 1)).astype(bool),
        rng.integers(0, 256, (7, 5)).astype(np.uint8),
        rng.integers(0, 65536, (9, 4)).astype(np.uint16),
        rng.integers(0, 256, (1, 17, 3)).astype(np.uint8),
        rng.integers(0, 256, (64, 48, 3)).astype(np.uint8)[:, ::2],  # not contiguous
        rng.integers(0, 256, (1000, 800, 3)).astype(np.uint8),
    ]


@pytest.mark.parametrize("pixels", _png_cases(), ids=lambda pixels: f"{pixels.dtype}{pixels.shape}")
def test_png_answers_decode_to_the_exact_pixels_they_were_made_of(pixels):
    from easerve.service.codecs.png import encode_png

    decoded = Image.open(io.BytesIO(encode_png(pixels)))
    decoded.load()  # Pillow checks every chunk's CRC and the zlib stream while loading
    assert decoded.size == (pixels.shape[1], pixels.shape[0])
    expected = {np.dtype(bool): "1", np.dtype(np.uint16): "I;16"}.get(pixels.dtype, "L" if pixels.ndim == 2 else "RGB")
    assert decoded.mode == expected
    np.testing.assert_array_equal(np.asarray(decoded), pixels)


@pytest.mark.parametrize(
    "pixels", [np.zeros((0, 4), np.uint8), np.zeros((3, 0, 3), np.uint8), np.zeros((4, 4), np.float32), np.zeros(5)]
)
def test_an_array_with_no_png_form_is_refused_by_name(pixels):
    from easerve.service.codecs.png import encode_png

    with pytest.raises(ValueError, match="PNG"):
        encode_png(pixels)


def _two_bands() -> list[int]:
    from easerve.service.codecs.bands import in_bands

    return in_bands(lambda band: band, 2)


def test_bands_are_worked_in_a_process_forked_after_the_parent_used_them():
    """A forked child has none of its parent's pool threads: it must not wait on them."""
    import multiprocessing

    assert _two_bands() == [0, 1]  # the parent's pool exists from here on
    with multiprocessing.get_context("fork").Pool(1) as children:
        assert children.apply_async(_two_bands).get(timeout=30) == [0, 1]
