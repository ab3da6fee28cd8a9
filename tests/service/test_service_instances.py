"""`/v1/segment/instances` and the v2 protocol on the instance fixture (onnx_fixtures: the detection
fixture's boxes, each with a mask of 0.9 inside its box): every image transport, both mask
formats, the overlay, and bad requests."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from onnx_fixtures import DETECT_SIZE, DETECTION_BOXES, instance_masks, model_name
from PIL import Image
from pycocotools import mask as coco_mask
from service_helpers import image_bytes

from easerve.service.codecs.images import DecodedImage
from easerve.service.tasks.instances import MaskPlacement, OverlayCanvas, place_mask
from easerve.service.tasks.segmentation import Overlay

WHITE, BLACK = (255, 255, 255), (0, 0, 0)
PNG = {"content-type": "image/png"}
INSTANCES = model_name("fixinst")


def expected_masks(width: int, height: int, count: int) -> np.ndarray:
    """The fixture's first `count` masks resized bilinearly to `width` x `height`, cut at 0.5."""
    resized = [
        np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.BILINEAR))
        for mask in instance_masks()[0, :count]
    ]
    return (np.stack(resized) >= 0.5).astype(np.uint8)


def box_masks(width: int, height: int, count: int) -> np.ndarray:
    """The fixture's first `count` boxes scaled to `width` x `height`, filled."""
    scale = np.array([width / DETECT_SIZE[1], height / DETECT_SIZE[0]] * 2)
    masks = np.zeros((count, height, width), np.uint8)
    for slot, (x0, y0, x1, y1) in enumerate(np.round(DETECTION_BOXES[:count] * scale).astype(int)):
        masks[slot, y0:y1, x0:x1] = 1
    return masks


def rle_masks(result: dict) -> np.ndarray:
    return np.stack([coco_mask.decode(instance["mask"]) for instance in result["instances"]])


def test_instances_have_class_score_box_and_rle_mask_in_the_original_pixels(client):
    width, height = 64, 96  # the model sees 32x32: x scaled by 2, y by 3
    response = client.post(
        "/v1/segment/instances?score_threshold=0.5", content=image_bytes(WHITE, (width, height)), headers=PNG
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == INSTANCES and answer["batch_size"] >= 1
    (result,) = answer["results"]
    assert (result["width"], result["height"], result["overlay_png"]) == (width, height, None)
    found = result["instances"]
    assert [(i["label"], i["index"], round(i["score"], 3)) for i in found] == [("circle", 0, 0.9), ("square", 1, 0.6)]
    scale = np.array([width / DETECT_SIZE[1], height / DETECT_SIZE[0]] * 2)
    np.testing.assert_allclose([i["box"] for i in found], DETECTION_BOXES[:2] * scale, atol=1e-3)
    masks = rle_masks(result)
    assert all(i["mask"]["size"] == [height, width] for i in found)
    np.testing.assert_array_equal(masks, expected_masks(width, height, 2))
    boxes = box_masks(width, height, 2)  # the same, but for the corners the bilinear blend rounds off
    assert ((masks & boxes).sum(axis=(1, 2)) / (masks | boxes).sum(axis=(1, 2)) > 0.9).all()
    assert [i["area"] for i in found] == masks.sum(axis=(1, 2)).tolist()


def test_small_images_are_decoded_and_masked_where_the_batch_ran_and_overlays_or_large_ones_on_a_worker(
    client, worker_hops
):
    small, large = (64, 64), (65, 64)  # at most four model inputs (32x32) of pixels, and one column more
    for size, query, hops in (
        (small, "", []),
        (small, "?overlay=true", ["_decoded_batch", "applied"]),
        (large, "", ["_model_batch", "applied"]),
    ):
        worker_hops.clear()
        response = client.post(f"/v1/segment/instances{query}", content=image_bytes(WHITE, size), headers=PNG)
        assert response.status_code == 200, response.text
        assert worker_hops == hops, (size, query)
        (result,) = response.json()["results"]
        np.testing.assert_array_equal(rle_masks(result), expected_masks(*size, 2))


def test_png_masks_on_request(client):
    body = image_bytes(WHITE, (48, 40))
    result = client.post("/v1/segment/instances?mask_format=png&top_k=1", content=body, headers=PNG).json()["results"][
        0
    ]
    (instance,) = result["instances"]
    assert "mask" not in instance
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(instance["mask_png"]))))
    assert mask.shape == (40, 48) and mask.dtype == bool
    np.testing.assert_array_equal(mask, expected_masks(48, 40, 1)[0].astype(bool))


@pytest.mark.parametrize("transport", ["raw", "multipart", "json"])
def test_every_image_transport(client, transport):
    body = image_bytes(WHITE, (32, 32))
    if transport == "raw":
        response = client.post("/v1/segment/instances", content=body, headers=PNG)
    elif transport == "multipart":
        response = client.post("/v1/segment/instances", files=[("files", ("a.png", body, "image/png"))] * 2)
    else:
        response = client.post("/v1/segment/instances", json={"images": [base64.b64encode(body).decode()] * 2})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == (1 if transport == "raw" else 2)
    assert all([i["label"] for i in r["instances"]] == ["circle", "square"] for r in results)


def test_a_dark_image_has_no_instances(client):
    result = client.post("/v1/segment/instances", content=image_bytes(BLACK, (32, 32)), headers=PNG).json()["results"][
        0
    ]
    assert result["instances"] == []


def test_overlay_colours_each_instance_at_the_width_asked_for(client):
    white = image_bytes(WHITE, (64, 64))
    answer = client.post(
        "/v1/segment/instances?overlay=true&alpha=1&overlay_width=32", content=white, headers=PNG
    ).json()
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["results"][0]["overlay_png"]))))
    assert overlay.shape == (32, 32, 3)
    # Inside the first box (4..12 of 32) the instance's colour replaces the white image.
    assert not (overlay[8, 8] == 255).all()
    assert (overlay[28, 2] == 255).all()  # outside every mask and box: the image itself
    as_jpeg = client.post(
        "/v1/segment/instances?overlay=true&alpha=1&overlay_width=32&overlay_format=jpeg", content=white, headers=PNG
    ).json()["results"][0]
    assert as_jpeg["overlay_png"] is None
    with Image.open(io.BytesIO(base64.b64decode(as_jpeg["overlay_jpeg"]))) as picture:
        assert picture.format == "JPEG" and picture.size == (32, 32)
        assert np.abs(np.asarray(picture.convert("RGB")).astype(int) - overlay.astype(int)).mean() < 8


@pytest.mark.parametrize(
    "query,fragment",
    [
        ("mask_format=svg", "mask_format"),
        ("score_threshold=2", "score_threshold"),
        ("top_k=0", "top_k"),
        ("overlay_width=0", "overlay_width"),
        ("alpha=-1", "alpha"),
        ("overlay_format=webp", "overlay_format"),
    ],
)
def test_bad_parameters_are_422_with_the_field(client, query, fragment):
    response = client.post(f"/v1/segment/instances?{query}", content=image_bytes(WHITE), headers=PNG)
    assert response.status_code == 422 and fragment in response.text


def test_bad_bodies_are_4xx_with_a_message(client):
    not_an_image = client.post("/v1/segment/instances", content=b"not an image at all", headers=PNG)
    assert not_an_image.status_code in (400, 415) and not_an_image.json()["error"]
    empty = client.post("/v1/segment/instances", content=b"", headers=PNG)
    assert 400 <= empty.status_code < 500 and empty.json()["error"]
    wrong_task = client.post(
        f"/v1/segment/instances?model={model_name('fixdet')}", content=image_bytes(WHITE), headers=PNG
    )
    assert wrong_task.status_code in (400, 404, 422) and "instance" in wrong_task.json()["error"]


def test_v2_infer_returns_the_four_outputs(client):
    images = np.ones((2, 3, *DETECT_SIZE), np.float32)
    body = {
        "inputs": [{"name": "image", "shape": list(images.shape), "datatype": "FP32", "data": images.ravel().tolist()}]
    }
    response = client.post(f"/v2/models/{INSTANCES}/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    assert list(outputs) == ["boxes", "scores", "labels", "masks"]
    k = len(DETECTION_BOXES)
    assert outputs["masks"]["shape"] == [2, k, *DETECT_SIZE] and outputs["masks"]["datatype"] == "FP32"
    masks = np.reshape(outputs["masks"]["data"], (2, k, *DETECT_SIZE))
    assert masks[1, 0, 4:12, 4:12].min() == pytest.approx(0.9) and masks[1, 0, 20, 20] == 0
    metadata = client.get(f"/v2/models/{INSTANCES}").json()
    assert [o["shape"] for o in metadata["outputs"]][-1] == [-1, k, -1, -1]


@pytest.mark.parametrize("width,height", [(101, 77), (96, 96), (17, 13)])
def test_place_mask_resizes_only_around_the_mask_and_matches_a_whole_resize(width, height):
    rng = np.random.default_rng(0)
    probabilities = np.zeros((48, 48), np.float32)
    probabilities[10:30, 16:40] = rng.uniform(0.3, 1.0, (20, 24))
    placement = place_mask(probabilities, width, height)
    whole = np.asarray(Image.fromarray(probabilities).resize((width, height), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(placement.full(height, width), (whole >= 0.5).astype(np.uint8))
    assert placement.pixels.size < width * height
    empty = place_mask(np.full((48, 48), 0.2, np.float32), width, height)
    assert empty.full(height, width).sum() == 0


@pytest.mark.parametrize("seed", range(6))
def test_run_lengths_from_the_region_are_cocos_encoding_of_the_whole_mask(seed):
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(5, 60, 2))
    rows, columns = (int(v) for v in rng.integers(1, [height + 1, width + 1]))
    top, left = int(rng.integers(0, height - rows + 1)), int(rng.integers(0, width - columns + 1))
    # Full-height regions and masks touching the image's edges join runs across columns.
    if seed % 2:
        top, rows = 0, height
    pixels = (rng.random((rows, columns)) < rng.uniform(0.2, 0.9)).astype(np.uint8)
    placement = MaskPlacement(top, left, pixels)
    whole = placement.full(height, width)
    expected = coco_mask.encode(np.asfortranarray(whole.astype(np.uint8)))
    assert placement.rle(height, width) == {"size": [height, width], "counts": expected["counts"].decode("ascii")}
    assert sum(placement.run_lengths(height, width)) == height * width
    assert placement.area == int(whole.sum())


def test_an_empty_mask_is_one_run_of_zeros():
    empty = MaskPlacement(0, 0, np.zeros((0, 0), np.uint8))
    assert empty.run_lengths(7, 5) == [35] and empty.area == 0
    assert coco_mask.decode(empty.rle(7, 5)).sum() == 0


def test_the_overlay_draws_boxes_a_model_gives_reversed_or_not_finite():
    image = DecodedImage(Image.new("RGB", (40, 30), "white"), (40, 30))
    canvas = OverlayCanvas(image, Overlay(0.5, 10_000_000))
    placement = place_mask(np.pad(np.ones((4, 4), np.float32), 6), 40, 30)
    for box in ([30.0, 20.0, 10.0, 5.0], [float("nan"), 0.0, 5.0, 5.0], [0.0, 0.0, float("inf"), 5.0]):
        canvas.paint(placement, box)
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(canvas.fields()["overlay_png"]))))
    assert overlay.shape == (30, 40, 3) and not (overlay == 255).all()


@pytest.mark.parametrize("bands", [1, 3])
def test_boxes_outlined_band_by_band_are_the_boxes_outlined_on_the_whole_overlay(monkeypatch, bands):
    """Boxes across bands, reversed, fractional, partly and wholly outside the overlay, far off."""
    from PIL import ImageDraw

    from easerve.service.tasks import segmentation
    from easerve.service.tasks.segmentation import class_colours

    monkeypatch.setattr(segmentation, "band_count", lambda nbytes, least: bands)
    image = DecodedImage(Image.new("RGB", (80, 60), "white"), (80, 60))
    canvas = OverlayCanvas(image, Overlay(0.5, 10_000_000))
    boxes = [
        [5.5, 3.2, 70.9, 55.7],
        [60.0, 40.0, 10.0, 9.6],
        [-12.5, 19.9, 30.0, 20.4],
        [-0.5, -0.7, 79.99, 59.99],
        [75.0, 50.0, 300.0, 200.0],
        [-1e30, 10.0, 1e30, 12.0],
        [90.0, 70.0, 95.0, 80.0],
        [2.0, 19.0, 6.0, 19.5],  # no height, on a band's last row: its sides paint the row below
        [10.0, -1.0, 14.0, -1.0],  # no height, just above: its sides paint row 0
    ]
    for box in boxes:
        canvas.paint(place_mask(np.zeros((8, 8), np.float32), 80, 60), box)
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(canvas.fields()["overlay_png"]))))
    expected = Image.new("RGB", (80, 60), "white")
    pen = ImageDraw.Draw(expected)
    drawn_whole = [*boxes[:5], [-1, 10, 80, 12], *boxes[6:]]  # the far box's edges: rows 10 and 12, edge to edge
    for box, colour in zip(drawn_whole, class_colours(len(boxes) + 1)[1:], strict=True):
        x0, x1 = sorted(box[0::2])
        y0, y1 = sorted(box[1::2])
        pen.rectangle((x0, y0, x1, y1), outline=tuple(int(c) for c in colour))
    np.testing.assert_array_equal(overlay, np.asarray(expected))
