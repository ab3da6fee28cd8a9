"""Every kind of bad input gets a 4xx JSON error with a clear message, and the server goes on
serving (each test ends with a good request). Limits are conftest.LIMITS."""

from __future__ import annotations

import base64
import io
import json
import logging

import numpy as np
import pytest
from onnx_fixtures import model_name
from PIL import Image
from service_helpers import LIMITS, image_bytes

PNG = {"content-type": "image/png"}
JSON_TYPE = {"content-type": "application/json"}


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def assert_error(response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for fragment in fragments:
        assert fragment.lower() in message.lower(), message


@pytest.fixture(autouse=True)
def server_still_serves(client):
    yield
    response = client.post("/v1/classify", content=image_bytes((255, 0, 0)), headers=PNG)
    assert response.status_code == 200 and response.json()["results"][0]["top_k"][0]["label"] == "circle"


# -- images -----------------------------------------------------------------------------------


def test_corrupt_image_bytes(client):
    response = client.post("/v1/classify", content=b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, headers=PNG)
    assert_error(response, 400, "decode")


def test_random_bytes_that_are_no_image(client):
    response = client.post("/v1/classify", content=np.random.default_rng(0).bytes(3000), headers=PNG)
    assert_error(response, 400, "cannot decode")


def test_truncated_image(client):
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    truncated = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    assert_error(client.post("/v1/classify", content=truncated, headers=PNG), 400, "truncated")


def test_zero_byte_body(client):
    assert_error(client.post("/v1/classify", content=b"", headers=PNG), 400, "empty")


def test_zero_byte_multipart_file(client):
    response = client.post("/v1/segment", files={"file": ("empty.png", b"", "image/png")})
    assert_error(response, 400, "empty")


def test_multipart_without_any_file(client):
    response = client.post("/v1/classify", data={"note": "no image here"}, files={})
    assert response.status_code in (400, 415)
    assert "error" in response.json()


def test_wrong_content_type(client):
    response = client.post("/v1/classify", content=image_bytes((1, 2, 3)), headers={"content-type": "text/plain"})
    assert_error(response, 415, "text/plain")


def test_missing_content_type(client):
    response = client.post("/v1/detect", content=image_bytes((1, 2, 3)), headers={"content-type": ""})
    assert_error(response, 415)


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_unsupported_image_format(client, fmt):
    response = client.post(
        "/v1/classify", content=image_bytes((0, 0, 255), fmt=fmt), headers={"content-type": "image/png"}
    )
    assert_error(response, 415, fmt, "PNG")


def test_image_over_the_pixel_limit_is_refused_before_decoding(client):
    side = int(LIMITS["max_image_pixels"] ** 0.5) + 10
    bomb = image_bytes((0, 0, 0), (side, side))  # a solid colour compresses to a few kB
    assert len(bomb) < 50_000
    assert_error(client.post("/v1/segment", content=bomb, headers=PNG), 413, "pixels")


def test_body_over_the_size_limit(client):
    body = b"\0" * (LIMITS["max_body_bytes"] + 1)
    assert_error(client.post("/v1/classify", content=body, headers=PNG), 413, "limit")


def test_chunked_body_over_the_size_limit_is_cut_off(client):
    def chunks():
        for _ in range(LIMITS["max_body_bytes"] // 65536 + 2):
            yield b"\0" * 65536

    response = client.post("/v1/classify", content=chunks(), headers=PNG)
    assert_error(response, 413, "limit")


def test_too_many_images_in_a_multipart_request(client):
    count = LIMITS["max_images_per_request"] + 1
    files = [("files", (f"{i}.png", image_bytes((i, i, i)), "image/png")) for i in range(count)]
    assert_error(client.post("/v1/classify", files=files), 413, f"{count} images")


def test_too_many_images_in_a_json_request(client):
    encoded = base64.b64encode(image_bytes((9, 9, 9))).decode()
    response = client.post("/v1/detect", json={"images": [encoded] * (LIMITS["max_images_per_request"] + 1)})
    assert_error(response, 413, "images")


def test_generate_too_many_images(client):
    response = client.post("/v1/generate", json={"label": 0, "n": LIMITS["max_images_per_request"] + 1})
    assert_error(response, 413, "limit")


def test_invalid_base64(client):
    assert_error(client.post("/v1/classify", json={"image": "***not base64***"}), 400, "base64")


def test_json_image_body_without_an_image(client):
    assert_error(client.post("/v1/classify", json={"picture": "abc"}), 400, "image")


def test_malformed_json_body(client):
    response = client.post("/v1/classify", content=b'{"image": ', headers=JSON_TYPE)
    assert_error(response, 400, "json")


def test_malformed_json_is_400_on_the_point_cloud_routes_too(client):
    for route in ("/v1/pointcloud/classify", "/v1/pointcloud/segment"):
        assert_error(client.post(route, content=b'{"points": [[0, 0', headers=JSON_TYPE), 400, "json")


def test_a_malformed_multipart_body_is_answered_400_without_a_warning_in_the_log(client, caplog):
    body = b"--xyz\r\nContent-Disposition: form-data; name=file\r\n\r\nabc\r\n--wrong--garbage"
    with caplog.at_level(logging.WARNING):
        response = client.post(
            "/v1/classify", content=body, headers={"content-type": "multipart/form-data; boundary=xyz"}
        )
    assert 400 <= response.status_code < 500
    assert not [record for record in caplog.records if record.name.startswith("python_multipart")]


# -- point clouds -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_coordinates_in_json(client, value):
    body = f'{{"points": [[0, 0, 0], [1, {value}, 0], [0, 1, 1]]}}'.encode()
    response = client.post("/v1/pointcloud/classify", content=body, headers=JSON_TYPE)
    assert_error(response, 422, "NaN or infinite")


def test_non_finite_coordinates_in_npy(client):
    points = np.zeros((10, 3), np.float32)
    points[3, 1] = np.nan
    points[5, 2] = np.inf
    response = client.post(
        "/v1/pointcloud/segment", content=npy_bytes(points), headers={"content-type": "application/octet-stream"}
    )
    assert_error(response, 422, "2 point(s)")


@pytest.mark.parametrize(
    "points",
    [[[1, 2], [3, 4]], [[1, 2, 3, 4]], [[1, 2, 3], [4, 5]], [1, 2, 3], [[1, "x", 3]], [[1, None, 3]]],
    ids=["two-coordinates", "four-coordinates", "ragged", "flat", "string", "null"],
)
def test_wrong_shaped_or_typed_json_points(client, points):
    response = client.post("/v1/pointcloud/classify", content=json.dumps({"points": points}), headers=JSON_TYPE)
    assert_error(response, 422)


@pytest.mark.parametrize("shape", [(10, 2), (10, 3, 1), (30,)], ids=["2-columns", "3-d", "1-d"])
def test_wrong_shaped_npy_points(client, shape):
    response = client.post(
        "/v1/pointcloud/classify", files={"file": ("c.npy", npy_bytes(np.zeros(shape)), "application/octet-stream")}
    )
    assert_error(response, 422, "(N, 3)")


def test_empty_point_cloud(client):
    assert_error(client.post("/v1/pointcloud/classify", json={"points": []}), 422, "no points")


def test_npy_with_pickled_objects_is_refused(client):
    objects = np.array([{"x": 1}, None], dtype=object)
    response = client.post(
        "/v1/pointcloud/classify", content=npy_bytes(objects), headers={"content-type": "application/octet-stream"}
    )
    assert_error(response, 400, "npy")


def test_too_many_points_in_json(client):
    points = np.zeros((LIMITS["max_points"] + 1, 3)).tolist()
    assert_error(client.post("/v1/pointcloud/classify", json={"points": points}), 413, "limit")


def test_too_many_points_in_npy(client):
    body = npy_bytes(np.zeros((LIMITS["max_points"] + 1, 3), np.float32))
    response = client.post("/v1/pointcloud/segment", content=body, headers={"content-type": "application/octet-stream"})
    assert_error(response, 413, "limit")


def binary_ply_header(vertices: int) -> bytes:
    return (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {vertices}\n"
        "property float x\nproperty float y\nproperty float z\nend_header\n"
    ).encode()


def test_too_many_points_declared_in_a_ply_header(client):
    header = binary_ply_header(LIMITS["max_points"] + 1)
    response = client.post("/v1/pointcloud/classify", content=header, headers={"content-type": "application/ply"})
    assert_error(response, 413, "limit")


def test_truncated_binary_ply(client):
    header = binary_ply_header(100)
    response = client.post(
        "/v1/pointcloud/classify", content=header + b"\0" * 500, headers={"content-type": "application/ply"}
    )
    assert_error(response, 400, "truncated")


def test_malformed_ply_header(client):
    body = b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nbogus line\nend_header\n0 0 0\n1 1 1\n"
    assert_error(
        client.post("/v1/pointcloud/classify", content=body, headers={"content-type": "text/plain"}), 400, "bogus"
    )


def test_ply_without_xyz(client):
    body = b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float u\nproperty float v\nend_header\n0 0\n1 1\n"
    assert_error(
        client.post("/v1/pointcloud/classify", content=body, headers={"content-type": "text/plain"}), 400, "x, y and z"
    )


def test_unrecognised_point_file(client):
    response = client.post(
        "/v1/pointcloud/classify", content=b"hello world", headers={"content-type": "application/octet-stream"}
    )
    assert_error(response, 400, ".npy or .ply")


def test_point_endpoint_refuses_images(client):
    response = client.post("/v1/pointcloud/classify", content=image_bytes((1, 1, 1)), headers=PNG)
    assert_error(response, 415)


# -- model selection --------------------------------------------------------------------------


def test_unknown_model(client):
    response = client.post("/v1/classify?model=nope-ea-tiny", content=image_bytes((1, 1, 1)), headers=PNG)
    assert_error(response, 404, "nope-ea-tiny", model_name("fixcls"))


def test_unknown_attention_kind(client):
    response = client.post("/v1/classify?attention=xa", content=image_bytes((1, 1, 1)), headers=PNG)
    assert_error(response, 422, "attention")


def test_model_of_another_task(client):
    response = client.post(f"/v1/classify?model={model_name('fixseg')}", content=image_bytes((1, 1, 1)), headers=PNG)
    assert_error(response, 422, "segmentation")


def test_model_and_attention_that_disagree(client):
    response = client.post(
        f"/v1/classify?model={model_name('fixcls', 'ea')}&attention=sa", content=image_bytes((1, 1, 1)), headers=PNG
    )
    assert_error(response, 422, "attention")


def test_invalid_query_values(client):
    response = client.post("/v1/detect?score_threshold=2", content=image_bytes((1, 1, 1)), headers=PNG)
    assert_error(response, 422, "score_threshold")


def test_unknown_route_answers_json(client):
    assert_error(client.get("/v1/nothing-here"), 404)
