"""easerve's Ray Serve application on a real local Ray cluster: the same answers as the
single-process server on the bundled samples, requests spread over a model's replicas, the API
key, deadlines and 429 across processes, and a model replica killed under load.

One cluster and one application for the whole module (starting them is most of its time):
every EA model (one per task endpoint) with `eamlp-ea-tiny` on 2 replicas, plus two SA models
set up for the error paths: `eamlp-sa-tiny` on 2 replicas holding each request 200 ms in its
replica's queue (so requests are in flight on the replica that is killed), and `pct-sa-tiny`
with a 400 ms queue delay and a queue of one (deadlines and 429).
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import threading
import time
import warnings

import httpx
import pytest
from ray_helpers import (
    BUNDLED_WEIGHTS,
    SMALL,
    described_replicas,
    free_port,
    run_app,
    shut_down_ray,
    wait_until,
    without_timings,
)

pytest.importorskip("ray.serve", reason="needs Ray Serve: pip install 'easerve[ray]'")

import ray  # noqa: E402

from easerve.loadtest.endpoints import ENDPOINTS, prepared_requests  # noqa: E402
from easerve.loadtest.samples import load_samples  # noqa: E402
from easerve.service.app import create_app  # noqa: E402
from easerve.service.ray_serve.config import service_settings  # noqa: E402
from easerve.service.ray_serve.deployments import NODE_HEADER, REPLICA_HEADER  # noqa: E402
from easerve.service.settings import Settings  # noqa: E402

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

KEY = "ray-test-key"
AUTH = {"authorization": f"Bearer {KEY}"}
EA_MODELS = [
    "eamlp-ea-tiny",
    "eanet-ea-tiny",
    "eadet-ea-tiny",
    "eagan-ea-tiny",
    "pct-ea-tiny",
    "pctpart-ea-tiny",
    "eainst-ea-tiny",
]
SPREAD = "eamlp-ea-tiny"
CRASH = "eamlp-sa-tiny"
SLOW = "pct-sa-tiny"
SETTINGS = {
    "weights_dirs": [str(BUNDLED_WEIGHTS)],
    "models": [*EA_MODELS, CRASH, SLOW],
    "api_key": KEY,
    "model_overrides": [
        f"{SPREAD}:num_replicas=2",
        f"{CRASH}:num_replicas=2",
        f"{CRASH}:max_queue_delay_ms=200",
        f"{CRASH}:health_check_period_s=1",
        f"{SLOW}:max_queue_delay_ms=400",
        f"{SLOW}:max_queue_size=1",
    ],
    # The single-process server would hold a request past the full queue at its door; the Ray
    # ingress has no door (its model replicas schedule): compare the queue-full answers.
    "max_waiting": 0,
    **SMALL,
}
# Logical CPUs only (Ray's bookkeeping): 11 replicas share the machine's cores.
RAY_ARGS = {"ingress_num_cpus": 0.25, "model_num_cpus": 0.25}
CLIENTS = 16
CLOUD = {"points": [[0.1 * i, 0.05 * i, -0.02 * i] for i in range(64)]}


@pytest.fixture(scope="module")
def ray_url():
    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="WARNING")
    try:
        yield run_app({**SETTINGS, **RAY_ARGS}, free_port())
    finally:
        shut_down_ray()


@pytest.fixture(scope="module")
def reference():
    """The single-process server with the same settings, in this process."""
    app = create_app(service_settings(Settings(**SETTINGS)))
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, 120.0, "the single-process server's readiness")
        yield client


def _post(url: str, path: str, body: bytes, content_type: str, **kwargs) -> httpx.Response:
    return httpx.post(
        f"{url}{path}", content=body, headers={"content-type": content_type, **AUTH}, timeout=30, **kwargs
    )


def _v2_tensor_request(name: str, shape: list[int]) -> bytes:
    import json

    count = 1
    for size in shape:
        count *= size
    data = [((index * 37) % 101) / 101.0 for index in range(count)]
    return json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": "FP32", "data": data}]}).encode()


def test_every_endpoint_answers_as_the_single_process_server(ray_url, reference):
    samples = load_samples()
    compared = 0
    for task in ENDPOINTS:
        for request in prepared_requests(task, samples, {"attention": "ea"}):
            headers = {"content-type": request.content_type, **AUTH}
            expected = reference.post(request.url, content=request.body, headers=headers)
            answer = _post(ray_url, request.url, request.body, request.content_type)
            assert expected.status_code == 200, expected.text
            assert answer.status_code == 200, answer.text
            assert without_timings(answer.json()) == without_timings(expected.json()), request.url
            compared += 1
    # The v2 protocol's inference and metadata, and what is served.
    for path, body in (
        ("/v2/models/pct-ea-tiny/infer", _v2_tensor_request("points", [2, 16, 3])),
        ("/v2/models/eamlp-ea-tiny/infer", _v2_tensor_request("image", [1, 3, 64, 64])),
    ):
        expected = reference.post(path, content=body, headers={"content-type": "application/json", **AUTH})
        answer = _post(ray_url, path, body, "application/json")
        assert answer.status_code == expected.status_code == 200, answer.text
        assert without_timings(answer.json()) == without_timings(expected.json()), path
        compared += 1
    for path in ("/healthz", "/readyz", "/v2/health/ready", "/v2/models/eamlp-ea-tiny", "/v2/models/pct-ea-tiny"):
        answer = httpx.get(f"{ray_url}{path}", timeout=10)
        assert (answer.status_code, answer.json()) == (200, reference.get(path).json()), path
    ray_models = httpx.get(f"{ray_url}/v1/models").json()["models"]
    assert without_timings(ray_models) == without_timings(reference.get("/v1/models").json()["models"])
    assert compared >= 30


def test_requests_are_spread_over_both_replicas(ray_url):
    png = (BUNDLED_WEIGHTS.parent / "loadtest" / "samples" / "image-circle.png").read_bytes()
    replicas = collections.Counter()
    for _ in range(24):
        answer = _post(ray_url, f"/v1/classify?model={SPREAD}", png, "image/png")
        assert answer.status_code == 200, answer.text
        replicas[answer.headers[REPLICA_HEADER]] += 1
        assert answer.headers[NODE_HEADER] == ray.get_runtime_context().get_node_id()
    assert len(replicas) == 2 and all(name.startswith(f"{SPREAD}#") for name in replicas), replicas
    # The ingress's metrics say the same, with its own replica label on every sample.
    metrics = httpx.get(f"{ray_url}/metrics").text
    answered = [
        line
        for line in metrics.splitlines()
        if line.startswith("easerve_ray_model_replica_requests_total") and f'model="{SPREAD}"' in line
    ]
    assert {name for name in replicas} == {line.split('model_replica="')[1].split('"')[0] for line in answered}
    success = [line for line in metrics.splitlines() if line.startswith("nv_inference_request_success_total")]
    assert any(f'model="{SPREAD}"' in line and 'replica="easerve#' in line for line in success), success


def test_the_ingress_checks_the_api_key(ray_url):
    png = (BUNDLED_WEIGHTS.parent / "loadtest" / "samples" / "image-circle.png").read_bytes()
    refused = httpx.post(f"{ray_url}/v1/classify", content=png, headers={"content-type": "image/png"})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "API key" in refused.json()["error"]
    assert httpx.get(f"{ray_url}/readyz").status_code == 200  # the probes stay open


def test_a_deadline_fires_while_the_request_waits_in_its_replica_queue(ray_url, reference):
    body = httpx.Request("POST", "/", json=CLOUD).content
    path = f"/v1/pointcloud/classify?model={SLOW}&timeout=0.1"
    started = time.perf_counter()
    answer = _post(ray_url, path, body, "application/json")
    elapsed = time.perf_counter() - started
    assert answer.status_code == 504, answer.text
    assert "deadline exceeded" in answer.json()["error"]
    # The replica's batcher would run the lone request only after 400 ms: it was answered first.
    assert elapsed < 0.35, elapsed
    expected = reference.post(path, content=body, headers={"content-type": "application/json", **AUTH})
    assert expected.status_code == 504


def _queue_full(post) -> tuple[int, httpx.Response]:
    """A request held in SLOW's queue of one (400 ms), and one sent meanwhile: (the first's status,
    the second's response)."""
    body = httpx.Request("POST", "/", json=CLOUD).content
    path = f"/v1/pointcloud/classify?model={SLOW}&timeout=5"
    first: list[int] = []
    holder = threading.Thread(target=lambda: first.append(post(path, body).status_code))
    holder.start()
    time.sleep(0.2)
    second = post(path, body)
    holder.join()
    return first[0], second


def test_a_full_replica_queue_answers_429_with_retry_after_as_the_single_process_server(ray_url, reference):
    first, second = _queue_full(lambda path, body: _post(ray_url, path, body, "application/json"))
    assert first == 200
    assert second.status_code == 429, second.text
    assert int(second.headers["retry-after"]) >= 1
    assert "full" in second.json()["error"]
    headers = {"content-type": "application/json", **AUTH}
    first, expected = _queue_full(lambda path, body: reference.post(path, content=body, headers=headers))
    assert (first, expected.status_code) == (200, 429)
    assert "retry-after" in expected.headers


def _replicas_of(model: str, calls: int = 40) -> dict[int, str]:
    """{pid: replica id} of the replicas of `model` that answer `calls` calls through a handle."""
    return {info["pid"]: info["replica"] for info in described_replicas(model, calls)}


async def _load(url: str, path: str, body: bytes, seconds: float, kill_after_s: float, victim: tuple[int, str]):
    """`CLIENTS` closed-loop clients for `seconds`; the victim process (pid, replica id) is
    killed after `kill_after_s`, once it has answered a request (Ray's router may take a moment
    to send it any), at the latest 2 s before the end. Every answer as (status, Retry-After,
    error, answering replica), and exceptions by name."""
    answers: list[tuple[int, str | None, str, str | None]] = []
    errors: collections.Counter[str] = collections.Counter()
    headers = {"content-type": "image/png", **AUTH}

    async def client(http: httpx.AsyncClient, end: float) -> None:
        while time.monotonic() < end:
            try:
                response = await http.post(path, content=body, headers=headers)
            except httpx.HTTPError as error:
                errors[type(error).__name__] += 1
                continue
            error = "" if response.status_code == 200 else response.json().get("error", "")
            replica = response.headers.get(REPLICA_HEADER)
            answers.append((response.status_code, response.headers.get("retry-after"), error, replica))

    async def killer(end: float) -> None:
        await asyncio.sleep(kill_after_s)
        pid, replica = victim
        while not any(answer[3] == replica for answer in answers) and time.monotonic() < end - 2.0:
            await asyncio.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        end = time.monotonic() + seconds
        await asyncio.gather(killer(end), *(client(http, end) for _ in range(CLIENTS)))
    return answers, errors


def _retries(url: str) -> float:
    lines = httpx.get(f"{url}/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("easerve_ray_retries_total"))


async def _answering_replicas(url: str, path: str, body: bytes, requests: int) -> collections.Counter[str]:
    """`requests` sent at once: the replicas that answered them."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        headers = {"content-type": "image/png", **AUTH}
        responses = await asyncio.gather(*(http.post(path, content=body, headers=headers) for _ in range(requests)))
    assert all(response.status_code == 200 for response in responses)
    return collections.Counter(response.headers[REPLICA_HEADER] for response in responses)


def test_a_killed_model_replica_is_restarted_and_no_request_fails(ray_url):
    """Last in the module: it kills a process of the shared application."""
    before = _replicas_of(CRASH)
    assert len(before) == 2, before
    victim = min(before)
    png = (BUNDLED_WEIGHTS.parent / "loadtest" / "samples" / "image-circle.png").read_bytes()
    path = f"/v1/classify?model={CRASH}"
    retries_before = _retries(ray_url)
    answers, errors = asyncio.run(_load(ray_url, path, png, 8.0, 2.0, (victim, before[victim])))
    statuses = collections.Counter(status for status, _, _, _ in answers)
    assert not errors, errors
    # The victim was taking its share of the load (its queue holds requests for up to 200 ms):
    # those in flight on it when it died were sent again (by easerve or by Ray's router) or
    # answered 503 + Retry-After, saying so; nothing else failed.
    answered_by = collections.Counter(replica for _, _, _, replica in answers)
    assert answered_by[before[victim]], f"the victim {before[victim]} answered nothing: {answered_by}, {before}"
    lost = [(status, retry, error) for status, retry, error, _ in answers if status != 200]
    assert all(status == 503 and retry and "lost" in error for status, retry, error in lost), lost
    retried = _retries(ray_url) - retries_before
    print(f"killed replica {victim}: {statuses}, {retried:.0f} retried, {len(lost)} answered 503")
    assert statuses[200] >= 100, statuses

    # Ray starts a new replica: the deployment is back to two, and both take requests.
    def replaced() -> dict[int, str] | None:
        found = _replicas_of(CRASH)
        return found if len(found) == 2 and victim not in found else None

    after = wait_until(replaced, 90.0, "a replacement replica", pause_s=0.5)
    assert set(after.values()) != set(before.values())
    seen = asyncio.run(_answering_replicas(ray_url, path, png, 32))
    assert set(seen) == set(after.values()), (seen, after)
