"""The v1 task endpoints on the fixture models: every task, every input form, answers checked
against what the fixture graphs compute (see onnx_fixtures)."""

from __future__ import annotations

import base64
import inspect
import io
import struct
import threading
import zlib

import numpy as np
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from onnx_fixtures import DETECT_SIZE, DETECTION_BOXES, NUM_POINTS, model_name
from PIL import Image
from service_helpers import image_bytes

from easerve.service.app import ROUTERS

RED, GREEN, BLUE, BLACK, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0), (255, 255, 255)
PNG = {"content-type": "image/png"}


def decode_png(encoded: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def ascii_ply(points: np.ndarray) -> bytes:
    header = (
        f"ply\nformat ascii 1.0\ncomment made by a test\nelement vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\nproperty uchar red\n"
        "element face 1\nproperty list uchar int vertex_indices\nend_header\n"
    )
    rows = "".join(f"{x} {y} {z} 7\n" for x, y, z in points)
    return (header + rows + "3 0 1 2\n").encode()


def binary_ply(points: np.ndarray, big_endian: bool = False) -> bytes:
    order = ">" if big_endian else "<"
    name = "binary_big_endian" if big_endian else "binary_little_endian"
    header = (
        f"ply\nformat {name} 1.0\nelement vertex {len(points)}\n"
        "property double x\nproperty double y\nproperty double z\nend_header\n"
    ).encode()
    return header + b"".join(struct.pack(f"{order}3d", *point) for point in points)


def line_along_z(count: int = 200) -> np.ndarray:
    """A thin rod along z: its normalised extent is largest in z -> class 2 ("cylinder")."""
    z = np.linspace(-3.0, 3.0, count)
    return np.stack([np.zeros(count), 0.01 * np.sin(z), z], axis=1).astype(np.float32)


def assert_common_fields(answer: dict, model: str, batch_size: int = 1) -> None:
    assert answer["model"] == model
    assert answer["attention"] == model.split("-")[1]
    assert answer["backend"] == "onnxruntime-cpu/fp32"
    assert answer["batch_size"] >= batch_size
    timings = answer["timings"]
    assert 0 <= timings["queue_ms"] <= timings["total_ms"]
    assert 0 <= timings["compute_ms"] <= timings["total_ms"]


# -- classification ---------------------------------------------------------------------------


def test_classify_a_raw_png(client):
    response = client.post("/v1/classify", content=image_bytes(RED), headers=PNG)
    assert response.status_code == 200
    answer = response.json()
    assert_common_fields(answer, model_name("fixcls"))
    top = answer["results"][0]["top_k"]
    assert top[0]["label"] == "circle" and top[0]["index"] == 0
    assert len(top) == 5 and top[0]["probability"] > 0.9
    assert sum(entry["probability"] for entry in top) <= 1.0 + 1e-6


def test_classify_a_raw_jpeg_with_top_k(client):
    body = image_bytes(GREEN, fmt="JPEG")
    response = client.post("/v1/classify?top_k=2", content=body, headers={"content-type": "image/jpeg"})
    assert response.status_code == 200
    top = response.json()["results"][0]["top_k"]
    assert [entry["label"] for entry in top][:1] == ["square"] and len(top) == 2


def test_classify_several_multipart_images_answers_each_in_order(client):
    files = [("files", (f"{i}.png", image_bytes(colour), "image/png")) for i, colour in enumerate((RED, GREEN, BLUE))]
    response = client.post("/v1/classify", files=files)
    assert response.status_code == 200
    answer = response.json()
    assert [result["top_k"][0]["label"] for result in answer["results"]] == ["circle", "square", "triangle"]
    assert answer["batch_size"] >= 3


@pytest.mark.parametrize("prefix", ["", "data:image/png;base64,"])
def test_classify_base64_json_images(client, prefix):
    encoded = [prefix + base64.b64encode(image_bytes(colour)).decode() for colour in (BLUE, RED)]
    single = client.post("/v1/classify", json={"image": encoded[0]})
    several = client.post("/v1/classify", json={"images": encoded})
    assert single.status_code == several.status_code == 200
    assert single.json()["results"][0]["top_k"][0]["label"] == "triangle"
    assert [r["top_k"][0]["label"] for r in several.json()["results"]] == ["triangle", "circle"]


def test_the_default_model_is_the_tasks_ea_model_and_attention_sa_picks_its_twin(client):
    default = client.post("/v1/classify", content=image_bytes(RED), headers=PNG).json()
    twin = client.post("/v1/classify?attention=sa", content=image_bytes(RED), headers=PNG).json()
    named = client.post(
        f"/v1/classify?model={model_name('fixcls', 'sa')}", content=image_bytes(RED), headers=PNG
    ).json()
    assert (default["model"], default["attention"]) == (model_name("fixcls", "ea"), "ea")
    assert (twin["model"], twin["attention"]) == (model_name("fixcls", "sa"), "sa")
    assert named["model"] == model_name("fixcls", "sa")


# -- detection --------------------------------------------------------------------------------


def test_detect_maps_boxes_back_to_the_original_pixels(client):
    width, height = 64, 96  # the model sees 32x32: x scaled by 2, y by 3
    response = client.post("/v1/detect?score_threshold=0.5", content=image_bytes(WHITE, (width, height)), headers=PNG)
    assert response.status_code == 200
    answer = response.json()
    assert_common_fields(answer, model_name("fixdet"))
    result = answer["results"][0]
    assert (result["width"], result["height"]) == (width, height)
    scale = np.array([width / DETECT_SIZE[1], height / DETECT_SIZE[0]] * 2)
    boxes = [detection["box"] for detection in result["detections"]]
    np.testing.assert_allclose(boxes, DETECTION_BOXES[:2] * scale, atol=1e-3)
    assert [(d["label"], round(d["score"], 3)) for d in result["detections"]] == [("circle", 0.9), ("square", 0.6)]


def test_detect_score_threshold_and_top_k(client):
    white = image_bytes(WHITE, (32, 32))
    everything = client.post("/v1/detect?score_threshold=0", content=white, headers=PNG).json()
    best = client.post("/v1/detect?score_threshold=0&top_k=1", content=white, headers=PNG).json()
    dark = client.post("/v1/detect", content=image_bytes(BLACK, (32, 32)), headers=PNG).json()
    scores = [d["score"] for d in everything["results"][0]["detections"]]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    assert [d["label"] for d in best["results"][0]["detections"]] == ["circle"]
    assert dark["results"][0]["detections"] == []


def test_detect_clips_boxes_to_the_image(client):
    answer = client.post("/v1/detect?score_threshold=0", content=image_bytes(WHITE, (10, 10)), headers=PNG).json()
    for detection in answer["results"][0]["detections"]:
        x1, y1, x2, y2 = detection["box"]
        assert 0 <= x1 <= x2 <= 10 and 0 <= y1 <= y2 <= 10


# -- segmentation -----------------------------------------------------------------------------


def red_square_on_black(width: int = 90, height: int = 60) -> tuple[bytes, np.ndarray]:
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[15:45, 30:60] = RED
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    truth = np.zeros((height, width), np.uint8)
    truth[15:45, 30:60] = 1
    return buffer.getvalue(), truth


def test_segment_returns_the_mask_at_the_original_resolution(client):
    body, truth = red_square_on_black()
    response = client.post("/v1/segment", content=body, headers=PNG)
    assert response.status_code == 200
    answer = response.json()
    assert_common_fields(answer, model_name("fixseg"))
    result = answer["results"][0]
    mask = decode_png(result["mask_png"])
    assert mask.shape == truth.shape == (result["height"], result["width"])
    assert (mask == truth).mean() > 0.97  # only the resized edges may differ
    fractions = result["class_fractions"]
    assert fractions["circle"] == pytest.approx(truth.mean(), abs=0.03)
    assert sum(fractions.values()) == pytest.approx(1.0)
    assert result["overlay_png"] is None


def test_small_images_are_decoded_and_masked_where_the_batch_ran_and_overlays_or_large_ones_on_a_worker(
    client, worker_hops
):
    hops = worker_hops
    small, _ = red_square_on_black(60, 45)  # the fixture model's input is 32 x 32
    large, truth = red_square_on_black(600, 400)  # over four times that
    # the same small image carrying 64 KiB besides its pixels: not plainly encoded, its decoding
    # may cost more than its pixels say, so it is decoded on a worker (its mask still where it ran)
    chunk = b"zzZz" + bytes(64 * 1024)
    padded = small[:33] + len(chunk[4:]).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big") + small[33:]
    for body, query, expected in (
        (small, "", []),  # decoded with its batch, its mask made there: no worker hop at all
        (small, "?overlay=true", ["_decoded_batch", "applied"]),
        (padded, "", ["_model_batch"]),
        (large, "", ["_model_batch", "applied"]),
    ):
        hops.clear()
        response = client.post(f"/v1/segment{query}", content=body, headers=PNG)
        assert response.status_code == 200
        assert hops == expected, query
    mask = decode_png(response.json()["results"][0]["mask_png"])
    assert mask.shape == truth.shape


def test_segment_overlay_colours_the_classes_over_the_image(client):
    body, truth = red_square_on_black()
    result = client.post("/v1/segment?overlay=true&alpha=1", content=body, headers=PNG).json()["results"][0]
    overlay = decode_png(result["overlay_png"])
    assert overlay.shape == (*truth.shape, 3)
    assert (overlay[0, 0] == 0).all()  # background keeps the image's own pixel
    assert not (overlay[30, 45] == RED).all()  # the square takes its class colour


def test_segment_overlay_is_drawn_at_the_width_asked_for_and_the_mask_at_the_images(client):
    body, truth = red_square_on_black(90, 60)
    result = client.post("/v1/segment?overlay=true&alpha=1&overlay_width=45", content=body, headers=PNG).json()
    (answer,) = result["results"]
    assert decode_png(answer["overlay_png"]).shape == (30, 45, 3)
    assert decode_png(answer["mask_png"]).shape == truth.shape
    wider = client.post("/v1/segment?overlay=true&overlay_width=500", content=body, headers=PNG).json()
    assert decode_png(wider["results"][0]["overlay_png"]).shape == (60, 90, 3)  # never wider than the image
    refused = client.post("/v1/segment?overlay=true&overlay_width=0", content=body, headers=PNG)
    assert refused.status_code == 422


def test_segment_overlay_as_jpeg_is_the_same_picture_and_the_mask_stays_lossless(client):
    body, truth = red_square_on_black(300, 200)
    png = client.post("/v1/segment?overlay=true&alpha=1", content=body, headers=PNG).json()["results"][0]
    jpeg = client.post("/v1/segment?overlay=true&alpha=1&overlay_format=jpeg", content=body, headers=PNG).json()
    (answer,) = jpeg["results"]
    assert answer["overlay_png"] is None and png.get("overlay_jpeg") is None
    with Image.open(io.BytesIO(base64.b64decode(answer["overlay_jpeg"]))) as picture:
        assert picture.format == "JPEG"
        pixels = np.asarray(picture.convert("RGB")).astype(int)
    assert pixels.shape == (*truth.shape, 3)
    assert np.abs(pixels - decode_png(png["overlay_png"]).astype(int)).mean() < 4  # lossy, the same picture
    assert answer["mask_png"] == png["mask_png"]  # the labels stay lossless
    refused = client.post("/v1/segment?overlay=true&overlay_format=gif", content=body, headers=PNG)
    assert refused.status_code == 422 and "overlay_format" in refused.text


# -- generation -------------------------------------------------------------------------------


def test_generate_n_images_of_a_class(client):
    response = client.post("/v1/generate", json={"label": "star", "seed": 3, "n": 3})
    assert response.status_code == 200
    answer = response.json()
    assert_common_fields(answer, model_name("fixgan"), batch_size=3)
    assert (answer["label"], answer["seed"], len(answer["images"])) == ("star", 3, 3)
    images = [decode_png(encoded) for encoded in answer["images"]]
    assert all(image.shape == (8, 8, 3) and image.dtype == np.uint8 for image in images)
    assert not np.array_equal(images[0], images[1])


def test_generate_is_deterministic_for_a_seed_and_image_i_does_not_depend_on_n(client):
    first = client.post("/v1/generate", json={"label": 2, "seed": 11, "n": 2}).json()["images"]
    again = client.post("/v1/generate", json={"label": "triangle", "seed": 11, "n": 1}).json()["images"]
    other = client.post("/v1/generate", json={"label": 2, "seed": 12, "n": 1}).json()["images"]
    assert again[0] == first[0]
    assert other[0] != first[0]


def test_a_few_generated_images_need_no_worker_and_more_are_encoded_on_one(client, worker_hops, monkeypatch):
    from easerve.service.routers import generation

    monkeypatch.setattr(generation, "SMALL_ANSWER_MODEL_INPUTS", 2)  # the test server allows 4 a request
    answers = []
    for n, hops in ((2, []), (3, ["latent_inputs", "applied"])):
        worker_hops.clear()
        response = client.post("/v1/generate", json={"label": "circle", "n": n, "seed": 3})
        assert response.status_code == 200, response.text
        assert worker_hops == hops
        answers.append(response.json()["images"])
    assert len(answers[1]) == 3 and answers[1][:2] == answers[0]  # the same images either way


def test_generate_refuses_an_unknown_class(client):
    response = client.post("/v1/generate", json={"label": "unicorn"})
    assert response.status_code == 422
    assert "unicorn" in response.json()["error"] and "circle" in response.json()["error"]


# -- point clouds -----------------------------------------------------------------------------


def test_pointcloud_classify_json(client):
    response = client.post("/v1/pointcloud/classify", json={"points": line_along_z().tolist()})
    assert response.status_code == 200
    answer = response.json()
    assert_common_fields(answer, model_name("fixpct"))
    assert answer["num_points"] == 200
    assert answer["top_k"][0]["label"] == "cylinder"


@pytest.mark.parametrize(
    "encode, content_type",
    [
        (npy_bytes, "application/octet-stream"),
        (ascii_ply, "application/octet-stream"),
        (binary_ply, "application/ply"),
        (lambda points: binary_ply(points, big_endian=True), "application/octet-stream"),
    ],
    ids=["npy", "ascii-ply", "binary-ply-le", "binary-ply-be"],
)
def test_pointcloud_classify_file_bodies(client, encode, content_type):
    points = line_along_z()
    raw = client.post("/v1/pointcloud/classify", content=encode(points), headers={"content-type": content_type})
    upload = client.post("/v1/pointcloud/classify", files={"file": ("cloud.bin", encode(points), content_type)})
    for response in (raw, upload):
        assert response.status_code == 200, response.text
        assert response.json()["top_k"][0]["label"] == "cylinder"


def test_pointcloud_segment_labels_every_point_of_a_small_cloud(client):
    points = np.array([[1, 0, 0], [1.1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1.2]], np.float32) * 10
    response = client.post("/v1/pointcloud/segment", json={"points": points.tolist()})
    assert response.status_code == 200
    answer = response.json()
    assert_common_fields(answer, model_name("fixpart"))
    assert answer["parts"] == ["sphere/surface", "sphere/surface", "cube/top", "cube/bottom", "cube/bottom"]


def test_pointcloud_segment_maps_parts_back_to_every_point_of_a_large_cloud(client):
    rng = np.random.default_rng(0)
    count = NUM_POINTS * 20
    along_x = rng.normal([3, 0, 0], 0.2, (count // 2, 3))
    along_y = rng.normal([0, 3, 0], 0.2, (count // 2, 3))
    points = np.concatenate([along_x, along_y])[rng.permutation(count)]
    response = client.post(
        "/v1/pointcloud/segment", content=npy_bytes(points), headers={"content-type": "application/x-npy"}
    )
    assert response.status_code == 200
    parts = response.json()["parts"]
    assert len(parts) == count
    expected = np.where(points[:, 0] > points[:, 1], "sphere/surface", "cube/top")
    assert (np.asarray(parts) == expected).mean() > 0.99


def test_small_clouds_are_labelled_where_the_batch_ran_and_large_ones_on_a_worker(client, worker_hops):
    hops = worker_hops
    rng = np.random.default_rng(2)
    for count, last_hop in ((NUM_POINTS * 4, "_decode_and_sample"), (NUM_POINTS * 4 + 1, "applied")):
        hops.clear()
        response = client.post(
            "/v1/pointcloud/segment",
            content=npy_bytes(rng.normal(size=(count, 3))),
            headers={"content-type": "application/x-npy"},
        )
        assert response.status_code == 200
        assert len(response.json()["parts"]) == count
        # The answer's `Finish` applied on a worker (`applied`), or nothing after the decoding.
        assert hops[-1] == last_hop, (count, hops)


def test_the_server_computes_numpys_matrix_products_on_one_thread(client):
    from threadpoolctl import threadpool_info

    assert client.get("/healthz").status_code == 200  # the app has started
    blas = [library for library in threadpool_info() if library["user_api"] == "blas"]
    assert blas and all(library["num_threads"] == 1 for library in blas)


def test_pointcloud_answers_are_deterministic(client):
    points = np.random.default_rng(1).normal(size=(500, 3)).tolist()
    first = client.post("/v1/pointcloud/segment", json={"points": points}).json()["parts"]
    second = client.post("/v1/pointcloud/segment", json={"points": points}).json()["parts"]
    assert first == second


# -- discovery and health ---------------------------------------------------------------------


def test_models_lists_every_model_with_its_task_backend_and_batching(client):
    answer = client.get("/v1/models").json()
    models = {entry["name"]: entry for entry in answer["models"]}
    assert len(models) == 14  # every fixture (onnx_fixtures.FIXTURES), EA and SA
    classifier = models[model_name("fixcls")]
    assert (classifier["task"], classifier["attention"], classifier["state"]) == ("classification", "ea", "ready")
    assert classifier["backend"] == "onnxruntime-cpu/fp32"
    assert classifier["inputs"][0] == {"name": "image", "dtype": "float32", "shape": ["batch", 3, 16, 16]}
    assert classifier["batching"]["max_batch_size"] == 8
    assert answer["backend"] == "onnxruntime" and "CPU" in answer["backend_reason"]


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"live": True}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_openapi_documents_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/classify",
        "/v1/detect",
        "/v1/segment",
        "/v1/generate",
        "/v1/pointcloud/classify",
        "/v1/pointcloud/segment",
        "/v1/models",
        "/v2/models/{model_name}/infer",
        "/healthz",
        "/readyz",
    ):
        assert path in paths
    assert "image/png" in paths["/v1/classify"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


def test_the_routes_taking_overlay_options_are_those_of_the_tasks_whose_answers_draw_one(client):
    from easerve.artifacts.tasks import TASKS

    paths = client.get("/openapi.json").json()["paths"]
    for spec in TASKS.values():
        parameters = {parameter["name"] for parameter in paths[spec.path]["post"].get("parameters", [])}
        assert ("overlay" in parameters) == spec.overlay, spec.name


def test_metrics_count_requests_by_model_and_status(client):
    client.post("/v1/classify", content=image_bytes(RED), headers=PNG)
    client.post("/v1/classify", content=b"", headers=PNG)
    text = client.get("/metrics").text
    model = model_name("fixcls")
    assert f'easerve_http_requests_total{{code="200",model="{model}"}}' in text
    assert f'easerve_http_requests_total{{code="400",model="{model}"}}' in text
    for name in (
        "nv_inference_count_total",
        "nv_inference_exec_count_total",
        "easerve_batch_size_bucket",
        "easerve_queue_duration_seconds_bucket",
        "easerve_compute_duration_seconds_bucket",
        "easerve_request_duration_seconds_bucket",
        "nv_inference_pending_request_count",
    ):
        assert name in text


def test_every_route_and_dependency_runs_on_the_event_loop():
    """FastAPI runs a plain `def` endpoint or dependency on its thread pool: a thread hop (and a
    wait for a free thread) per request. Only the CPU work itself is sent to the workers."""

    def callables(dependant: Dependant):
        # A class instance (e.g. a security scheme) is called through its __call__.
        call = dependant.call
        yield call if inspect.isroutine(call) else type(call).__call__
        for dependency in dependant.dependencies:
            yield from callables(dependency)

    routes = [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]
    assert routes
    for route in routes:
        for call in callables(route.dependant):
            on_the_loop = inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)
            assert on_the_loop, f"{route.path}: {call.__qualname__} is not async"


def test_the_inference_and_control_routes_document_the_api_key(client):
    document = client.get("/openapi.json").json()
    assert set(document["components"]["securitySchemes"]) == {"APIKeyHeader", "HTTPBearer"}
    alternatives = [{"APIKeyHeader": []}, {"HTTPBearer": []}]
    for path in (
        "/v1/classify",
        "/v1/segment",
        "/v1/generate",
        "/v1/pointcloud/classify",
        "/v2/models/{model_name}/infer",
    ):
        assert document["paths"][path]["post"]["security"] == alternatives, path
    assert document["paths"]["/v2/repository/index"]["post"]["security"] == alternatives
    assert "security" not in document["paths"]["/healthz"]["get"]


# -- where an image's header is parsed -----------------------------------------------------------


def _padded_png(chunks: int) -> bytes:
    """A valid 40x30 PNG with `chunks` empty ancillary chunks after its header."""
    png = image_bytes(RED)
    header_end = 8 + 25  # signature, IHDR
    empty = struct.pack(">I", 0) + b"zzZz" + struct.pack(">I", zlib.crc32(b"zzZz"))
    return png[:header_end] + empty * chunks + png[header_end:]


def _opening_threads(monkeypatch) -> list[tuple[str, str]]:
    """(step, thread name) of each step the image routes take to parse their images: `inspect`
    (the payloads, and the images opened when they are plain) and `open` (images kept apart)."""
    from easerve.service.routers import vision

    steps: list[tuple[str, str]] = []

    def recorded(step, original):
        def run(*args, **kwargs):
            steps.append((step, threading.current_thread().name))
            return original(*args, **kwargs)

        return run

    monkeypatch.setattr(vision, "inspect_images", recorded("inspect", vision.inspect_images))
    monkeypatch.setattr(vision, "open_images", recorded("open", vision.open_images))
    return steps


def _jpeg_with_markers(segments: int) -> bytes:
    """A 40x30 JPEG with `segments` small APP markers after its start, as cameras write them."""
    jpeg = image_bytes(RED, fmt="JPEG")
    marker = b"\xff\xe9" + struct.pack(">H", 18) + b"camera-metadata!"
    return jpeg[:2] + marker * segments + jpeg[2:]


def test_a_small_plain_image_is_opened_on_the_event_loop_and_many_chunks_on_the_heavy_pool(client, monkeypatch):
    """Pillow parses each chunk in Python, holding the interpreter: a small body whose images
    hold many chunks (a multipart of images each padded just under the per-image cap) would stall
    the event loop, and every other client with it, for tens of milliseconds per request; on the
    light workers it would hold up the other requests' decoding."""
    steps = _opening_threads(monkeypatch)
    assert client.post("/v1/classify", content=image_bytes(RED), headers=PNG).status_code == 200
    files = [("files", (f"{i}.png", _padded_png(1000), "image/png")) for i in range(4)]
    response = client.post("/v1/classify", files=files)
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 4
    (plain, on_the_loop), (padded, also_on_the_loop), (kept_apart, heavy) = steps
    assert (plain, padded, kept_apart) == ("inspect", "inspect", "open")
    assert not on_the_loop.startswith("easerve-") and not also_on_the_loop.startswith("easerve-")
    assert heavy.startswith("easerve-heavy"), heavy


def test_images_with_as_many_markers_as_cameras_write_stay_on_the_event_loop(client, monkeypatch):
    steps = _opening_threads(monkeypatch)
    files = [("files", (f"{i}.jpg", _jpeg_with_markers(16), "image/jpeg")) for i in range(4)]
    response = client.post("/v1/classify", files=files)
    assert response.status_code == 200, response.text
    ((step, thread),) = steps  # opened where they were inspected: no worker, no heavy pool
    assert step == "inspect" and not thread.startswith("easerve-"), steps


def test_a_large_body_is_inspected_on_the_heavy_workers(weights_dir, monkeypatch):
    """A body's own cost is admitted before its images are parsed, so a large one (here over
    the 1 MB heavy threshold, counted twice: the body and its decoded copy) is parsed on the
    heavy pool, never delaying the light requests' workers."""
    from fastapi.testclient import TestClient
    from service_helpers import make_settings, wait_until

    from easerve.service.app import create_app

    steps = _opening_threads(monkeypatch)
    rng = np.random.default_rng(0)
    noise = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (480, 480, 3), np.uint8)).save(noise, "PNG", compress_level=0)
    assert noise.tell() > 512 * 1024
    with TestClient(create_app(make_settings(weights_dir, heavy_request_mb=1.0))) as heavy_client:
        wait_until(lambda: heavy_client.get("/readyz").status_code == 200, what="readiness")
        response = heavy_client.post("/v1/classify", content=noise.getvalue(), headers=PNG)
    assert response.status_code == 200, response.text
    ((step, thread),) = steps  # one worker call: payloads read and the plain image opened there
    assert step == "inspect" and thread.startswith("easerve-heavy"), steps


def test_a_model_on_a_gpu_has_its_small_images_decoded_on_a_worker_beside_its_batches(weights_dir, worker_hops):
    """On a GPU the worker threads decode the next requests while a batch computes; only runners
    on the CPU (whose cores the decoding takes anyway) have small images decoded in the batch."""
    from fastapi.testclient import TestClient
    from service_helpers import LIMITS, make_settings, wait_until

    from easerve.service.app import create_app
    from easerve.service.runners.selection import choose_backend, create_runner

    settings = make_settings(weights_dir, **LIMITS)
    backend = choose_backend(settings.backend).backend

    class OnGpu:
        """The real runner, saying it computes on a GPU."""

        on_gpu = True

        def __init__(self, files, max_batch_size: int) -> None:
            self._runner = create_runner(files, settings, backend, max_batch_size)
            self.backend = self._runner.backend
            self.run, self.close = self._runner.run, self._runner.close

    small, _ = red_square_on_black(30, 20)
    with TestClient(create_app(settings, runner_factory=OnGpu)) as gpu_client:
        wait_until(lambda: gpu_client.get("/readyz").status_code == 200, what="readiness")
        response = gpu_client.post("/v1/classify", content=small, headers=PNG)
    assert response.status_code == 200, response.text
    assert worker_hops == ["_model_batch"]
