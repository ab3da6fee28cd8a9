"""No client can hurt another: poisoned requests beside valid ones, heavy requests against the
memory budget, deadlines wherever a request waits, the key before the body, and the repros of
500s that a client could once cause. Served from the bundled models on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from service_helpers import LiveServer, SlowRunnerFactory, make_settings, rss_mb, wait_until

from easerve.loadtest.samples import load_samples
from easerve.service.admission import MB, MemoryBudget, WorkerPools
from easerve.service.app import create_app
from easerve.service.contract import InputLimits
from easerve.service.deadline import Deadline
from easerve.service.errors import DeadlineExceeded, Overloaded, PayloadTooLarge
from easerve.service.inference import InferenceContext
from easerve.service.settings import Settings

BUNDLED = Path(__file__).resolve().parents[2] / "weights"
POISON_MODELS = ["eagan-ea-tiny", "eanet-ea-tiny", "pct-ea-tiny", "eadet-ea-tiny"]
CLASSIFIER = "eamlp-ea-tiny"
PNG_TYPE = {"content-type": "image/png"}


def fp32(name: str, shape: list[int]) -> dict:
    return {"name": name, "shape": shape, "datatype": "FP32", "data": [0.0] * int(np.prod(shape))}


POISONED_V2 = {
    "eagan-ea-tiny": {
        "inputs": [fp32("z", [1, 64]), {"name": "label", "shape": [1], "datatype": "INT64", "data": [99]}]
    },
    "eanet-ea-tiny": {"inputs": [fp32("image", [1, 3, 0, 64])]},
    "pct-ea-tiny": {"inputs": [fp32("points", [1, 0, 3])]},
    "eadet-ea-tiny": {"inputs": [fp32("image", [1, 3, 1, 1])]},
}


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def black_5000() -> bytes:
    return png_bytes(Image.new("RGB", (5000, 5000)))


class PeakRss:
    """Samples this process's RSS every 20 ms while in use."""

    def __enter__(self) -> PeakRss:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def bundled_server():
    settings = make_settings(
        BUNDLED,
        models=[*POISON_MODELS, CLASSIFIER, "pct-sa-tiny", "pctpart-ea-tiny"],
        max_queue_delay_ms=20,
        request_memory_mb=256,
        server_memory_mb=512,
    )
    with LiveServer(create_app(settings)) as server:
        yield server


# -- poisoned requests never fail valid ones -------------------------------------------------


def test_poisoned_v2_requests_beside_valid_ones_fail_alone(bundled_server):
    async def scenario():
        async with httpx.AsyncClient(base_url=bundled_server.url, timeout=60) as client:

            async def valid_client() -> list[int]:
                return [(await client.post("/v1/generate", json={"label": 1, "seed": i})).status_code for i in range(5)]

            async def poisoning_client(model: str) -> list[int]:
                path = f"/v2/models/{model}/infer"
                return [(await client.post(path, json=POISONED_V2[model])).status_code for _ in range(5)]

            valid = [valid_client() for _ in range(16)]
            poisoned = [poisoning_client(model) for model in POISON_MODELS for _ in range(2)]
            results = await asyncio.gather(*valid, *poisoned)
            return results[: len(valid)], results[len(valid) :]

    valid, poisoned = asyncio.run(scenario())
    assert [code for codes in valid for code in codes] == [200] * 80
    statuses = [code for codes in poisoned for code in codes]
    assert all(400 <= code < 500 for code in statuses), statuses


def test_images_whose_pixels_are_corrupt_fail_alone_in_the_batch_they_are_decoded_in(bundled_server):
    """Small images are decoded where their batch runs: one whose header reads but whose pixel
    data is cut short is answered 400 there, and the images batched with it are answered."""
    rng = np.random.default_rng(0)
    valid = png_bytes(Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)))
    corrupt = valid[: len(valid) * 2 // 3]

    async def scenario():
        async with httpx.AsyncClient(base_url=bundled_server.url, timeout=60) as client:

            async def send(body: bytes) -> httpx.Response:
                return await client.post(f"/v1/classify?model={CLASSIFIER}", content=body, headers=PNG_TYPE)

            bodies = [valid, corrupt] * 12
            return bodies, await asyncio.gather(*(send(body) for body in bodies))

    bodies, responses = asyncio.run(scenario())
    for body, response in zip(bodies, responses, strict=True):
        if body is valid:
            assert response.status_code == 200, response.text
        else:
            assert response.status_code == 400 and "corrupt or truncated" in response.json()["error"], response.text
    assert max(response.json()["batch_size"] for response in responses if response.status_code == 200) > 1


def test_a_v2_label_out_of_range_is_422_and_its_batchmates_answer(bundled_server):
    answer = httpx.post(f"{bundled_server.url}/v2/models/eagan-ea-tiny/infer", json=POISONED_V2["eagan-ea-tiny"])
    assert answer.status_code == 422 and "0..5" in answer.json()["error"]


@pytest.mark.parametrize(
    "model,body,status",
    [
        ("pct-sa-tiny", {"inputs": [fp32("points", [1, 32768, 3])]}, 413),
        ("eanet-ea-tiny", {"inputs": [{"name": "image", "shape": [1, 3, 2048, 2048], "datatype": "FP32"}]}, 413),
        ("eanet-ea-tiny", {"inputs": [{"name": "image", "shape": [1, 3, 2**62, 8], "datatype": "FP32"}]}, 413),
        ("eanet-ea-tiny", {"inputs": [{"name": "image", "shape": [1, 3, 13, 16], "datatype": "FP32"}]}, 400),
    ],
    ids=["32768-points", "2048x2048", "overflowing-shape", "not-a-multiple-of-8"],
)
def test_v2_tensors_obey_the_limits_v1_enforces(bundled_server, model, body, status):
    started = time.perf_counter()
    answer = httpx.post(f"{bundled_server.url}/v2/models/{model}/infer", json=body, timeout=60)
    assert answer.status_code == status, answer.text
    assert time.perf_counter() - started < 5


# -- heavy requests: budgets, memory, bystanders ------------------------------------------------


def test_sixteen_huge_images_in_one_request_are_413_before_decoding(bundled_server, black_5000):
    files = [("files", (f"{i}.png", black_5000, "image/png")) for i in range(16)]
    started = time.perf_counter()
    answer = httpx.post(f"{bundled_server.url}/v1/classify", files=files, timeout=60)
    assert answer.status_code == 413 and "working memory" in answer.json()["error"]
    assert time.perf_counter() - started < 3


def test_heavy_requests_stay_within_the_memory_budget_and_a_bystander_is_answered(bundled_server, black_5000):
    url = bundled_server.url
    small = load_samples().images[0].png
    idle = rss_mb()

    async def scenario():
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:

            async def heavy(route: str) -> int:
                files = [("files", ("big.png", black_5000, "image/png"))]
                return (await client.post(route, files=files)).status_code

            async def bystander() -> list[float]:
                latencies = []
                for _ in range(6):
                    started = time.perf_counter()
                    answer = await client.post(f"/v1/classify?model={CLASSIFIER}", content=small, headers=PNG)
                    assert answer.status_code == 200, answer.text
                    latencies.append(time.perf_counter() - started)
                    await asyncio.sleep(0.3)
                return latencies

            routes = ["/v1/classify", "/v1/segment"] * 4
            results = await asyncio.gather(*(heavy(route) for route in routes), bystander())
            return results[:-1], results[-1]

    with PeakRss() as peak:
        statuses, latencies = asyncio.run(scenario())
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    # The budget is 512 MB of estimated working memory; allow for the estimate's slack.
    assert peak.peak - idle < 512 + 256, (idle, peak.peak)
    assert max(latencies) < 2.0, latencies
    wait_until(lambda: rss_mb() - idle < 150, 10, f"RSS back near idle ({idle:.0f} MB), now {rss_mb():.0f} MB")


PNG = {"content-type": "image/png"}


def test_the_budget_refuses_what_does_not_fit_beside_work_in_flight_with_retry_after():
    released: list[bool] = []
    budget = MemoryBudget(
        per_request_bytes=100 * MB, server_bytes=150 * MB, trim_after_bytes=0, on_idle=lambda: released.append(True)
    )
    first = budget.admit(90 * MB, "first")
    with pytest.raises(Overloaded) as refused:
        budget.admit(90 * MB, "second")
    assert refused.value.headers()["Retry-After"] == "1"
    with pytest.raises(PayloadTooLarge):
        budget.admit(101 * MB, "too big")
    first.release()
    assert budget.in_flight_bytes == 0 and released == [True]
    budget.admit(100 * MB, "alone").release()


# -- deadlines wherever a request waits -----------------------------------------------------------


def test_a_deadline_fires_while_a_worker_still_runs_and_the_cost_is_held_until_it_ends():
    settings = Settings()
    pools = WorkerPools.from_settings(settings)
    budget = MemoryBudget(MB * 100, MB * 100, MB, lambda: None)

    async def scenario():
        now = time.perf_counter()
        context = InferenceContext(None, now, Deadline(now + 0.3), pools, budget, InputLimits(1, 1, 1))
        context.admit(10 * MB, "a request")
        started = time.perf_counter()
        with pytest.raises(DeadlineExceeded):
            await context.offload(time.sleep, 1.5)
        answered_after = time.perf_counter() - started
        context.finish()
        held_after_answer = budget.in_flight_bytes
        await asyncio.sleep(1.5)
        return answered_after, held_after_answer, budget.in_flight_bytes

    try:
        answered_after, held, later = asyncio.run(scenario())
    finally:
        pools.shutdown()
    assert answered_after < 0.6
    assert held == 10 * MB and later == 0


def test_a_deadline_fires_while_the_requests_batch_computes(weights_dir):
    from onnx_fixtures import model_name

    classifier = model_name("fixcls")
    settings = make_settings(weights_dir, models=[classifier])
    factory = SlowRunnerFactory(settings, delay_s=0.0)
    with LiveServer(create_app(settings, runner_factory=factory)) as server:
        runner = factory.runners[classifier]
        runner.gate.clear()
        try:
            started = time.perf_counter()
            answer = httpx.post(f"{server.url}/v1/classify?timeout=1", content=_small_png(), headers=PNG, timeout=30)
            elapsed = time.perf_counter() - started
            assert runner.computing.is_set() and not runner.gate.is_set()
        finally:
            runner.gate.set()
    assert answer.status_code == 504 and "computed" in answer.json()["error"]
    assert elapsed < 1.8


def _small_png() -> bytes:
    return png_bytes(Image.new("RGB", (16, 16), (255, 0, 0)))


# -- the key before the body; metadata optionally protected -------------------------------------


@pytest.fixture(scope="module")
def keyed_server(weights_dir):
    settings = make_settings(weights_dir, api_key="k-1", protect_metadata=True)
    with LiveServer(create_app(settings)) as server:
        yield server


def test_the_key_is_checked_before_the_body_is_parsed(keyed_server):
    answer = httpx.post(
        f"{keyed_server.url}/v1/generate", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/metrics", "/v1/models", "/v2", "/docs", "/openapi.json"])
def test_protected_metadata_needs_the_key_and_health_probes_do_not(keyed_server, path):
    assert httpx.get(f"{keyed_server.url}{path}").status_code == 401
    assert httpx.get(f"{keyed_server.url}{path}", headers={"x-api-key": "k-1"}).status_code == 200
    for probe in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
        assert httpx.get(f"{keyed_server.url}{probe}").status_code == 200


# -- what once was a 500 ------------------------------------------------------------------------


def _ply_with_repeated_property() -> bytes:
    header = b"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\nproperty float x\n"
    header += b"property float y\nproperty float z\nend_header\n"
    return header + np.zeros((2, 4), "<f4").tobytes()


def _npy_claiming_a_huge_shape() -> bytes:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (10000000000, 3), }"
    header = header.ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\x00" * 24


@pytest.mark.parametrize(
    "path,content,headers",
    [
        ("/v1/pointcloud/classify", _ply_with_repeated_property(), {"content-type": "application/octet-stream"}),
        ("/v1/pointcloud/classify", _npy_claiming_a_huge_shape(), {"content-type": "application/octet-stream"}),
        (
            "/v2/models/eanet-ea-tiny/infer",
            json.dumps({"inputs": [{"name": "image", "shape": [2**40, 3, 2**40, 2**40], "datatype": "FP32"}]}).encode(),
            {"content-type": "application/json"},
        ),
    ],
    ids=["ply-repeated-property", "npy-huge-header", "v2-overflowing-shape"],
)
def test_former_500s_are_4xx_and_the_connection_serves_the_next_request(bundled_server, path, content, headers):
    with httpx.Client(base_url=bundled_server.url, timeout=30) as client:
        answer = client.post(path, content=content, headers=headers)
        assert 400 <= answer.status_code < 500, answer.text
        assert client.get("/healthz").status_code == 200


def test_a_client_that_leaves_mid_body_is_counted_499_not_500(bundled_server):
    host, port = bundled_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(
            f"POST /v1/classify?model={CLASSIFIER} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            "Content-Length: 100000\r\n\r\n".encode()
            + b"\x89PNG" * 10
        )
        time.sleep(0.3)
    wait_until(lambda: _http_requests(bundled_server, CLASSIFIER, "499") >= 1, 10, "a 499 in /metrics")
    assert _http_requests(bundled_server, CLASSIFIER, "500") == 0


def _http_requests(server: LiveServer, model: str, code: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    prefix = f'easerve_http_requests_total{{code="{code}",model="{model}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


# -- decoding that tells the truth, through the endpoint ------------------------------------------


def test_a_16_bit_greyscale_png_segments_like_its_8_bit_version(bundled_server):
    scene = Image.open(io.BytesIO(load_samples().scenes[0].png)).convert("L")
    sixteen = Image.fromarray(np.asarray(scene, np.uint16) * 257)  # I;16: the same picture, 16 bits
    fractions = []
    for picture in (scene, sixteen):
        answer = httpx.post(f"{bundled_server.url}/v1/segment", content=png_bytes(picture), headers=PNG, timeout=30)
        assert answer.status_code == 200, answer.text
        fractions.append(answer.json()["results"][0]["class_fractions"])
    assert fractions[0]["background"] < 0.99
    for label, value in fractions[0].items():
        assert abs(fractions[1][label] - value) < 0.01, (label, fractions)


def test_an_mpo_jpeg_from_a_phone_camera_answers_as_its_primary_frame(bundled_server):
    primary = Image.open(io.BytesIO(load_samples().images[0].png)).convert("RGB")
    mpo, jpeg = io.BytesIO(), io.BytesIO()
    primary.save(mpo, "MPO", save_all=True, append_images=[primary.rotate(90)], quality=95)
    primary.save(jpeg, "JPEG", quality=95)
    answers = []
    for body in (mpo.getvalue(), jpeg.getvalue()):
        answer = httpx.post(
            f"{bundled_server.url}/v1/classify?model={CLASSIFIER}",
            content=body,
            headers={"content-type": "image/jpeg"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        answers.append(answer.json()["results"][0]["top_k"])
    assert answers[0] == answers[1]
