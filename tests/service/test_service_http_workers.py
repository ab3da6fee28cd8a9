"""`easerve serve --http-workers 2` as a real process on the bundled models: the same answers as
the single-process server, both workers answering, batches formed across workers in the one
model process, the isolation guarantees (bad input, budgets, deadlines) across the process
boundary, a killed worker restarted with only its own requests lost, SIGTERM exiting 0 with no
shared-memory segment left, and the combinations that cannot work refused.

One served process for most of the module; the kill test starts its own. Behaviour only: every
wait is a bounded poll, no timing is asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import TestClient, clean_env, image_bytes, make_settings, serve_command, wait_until

from easerve.loadtest.endpoints import prepared_requests
from easerve.loadtest.samples import load_samples
from easerve.loadtest.server import free_port
from easerve.service.app import create_app
from easerve.service.frontend.arena import Region, RegionAllocator
from easerve.service.frontend.worker import WORKER_HEADER

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "weights"
MODELS = ["eamlp-ea-tiny", "eanet-ea-tiny"]
CLASSIFIER, SEGMENTER = MODELS
START_TIMEOUT_S = 90.0
# The classifier batches at most 4 and waits up to 300 ms for a full batch, so that 4 requests
# sent together form one batch; the segmenter waits 400 ms, so a 150 ms deadline fires while
# the request is queued in the model process.
BATCH = 4
SERVE_FLAGS = (
    "--models", *MODELS, "--http-workers", "2", "--shutdown-grace", "0.5", "--log-level", "warning",
    "--model-config", f"{CLASSIFIER}:max_batch_size={BATCH}",
    "--model-config", f"{CLASSIFIER}:max_queue_delay_ms=300",
    "--model-config", f"{SEGMENTER}:max_queue_delay_ms=400",
)  # fmt: skip
PNG = {"content-type": "image/png"}
TIMING_KEYS = frozenset({"timings", "queue_ms", "compute_ms", "total_ms", "batch_size"})


class WorkersServer:
    """`easerve serve --http-workers 2` (with `flags`) in a subprocess, its log in `log_path`."""

    def __init__(self, log_path: Path, weights_dir: Path = BUNDLED, flags: tuple[str, ...] = SERVE_FLAGS) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            serve_command(weights_dir, CLASSIFIER, self.port, *flags),
            cwd=REPO,
            env=clean_env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, START_TIMEOUT_S, "the served process to be ready")

    def segments(self) -> list[str]:
        """This server's shared-memory segments in /dev/shm."""
        return sorted(name for name in os.listdir("/dev/shm") if name.startswith(f"easerve-{self.process.pid}-"))

    def stop(self) -> int:
        """SIGTERM; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self._log.close()


def connections_per_worker(url: str, per_worker: int, attempts: int = 60) -> dict[str, list[httpx.Client]]:
    """Keep-alive connections (one client each), `per_worker` on each of the two workers,
    identified by the worker header of their first answer; the extra ones are closed."""
    by_worker: dict[str, list[httpx.Client]] = {}
    for _ in range(attempts):
        client = httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1))
        worker = client.get("/healthz").headers[WORKER_HEADER]
        held = by_worker.setdefault(worker, [])
        if len(held) < per_worker:
            held.append(client)
        else:
            client.close()
        if len(by_worker) == 2 and all(len(held) == per_worker for held in by_worker.values()):
            return by_worker
    raise AssertionError(f"two workers with {per_worker} connections each not reached: {by_worker}")


def send_at(start: threading.Barrier, client: httpx.Client, image: bytes) -> httpx.Response:
    """A classify request, sent when every sender has reached `start`."""
    start.wait()
    return client.post(f"/v1/classify?model={CLASSIFIER}", content=image, headers=PNG)


def without_timings(body: Any) -> Any:
    """A JSON answer without what differs from run to run (timings, and the batch it was in)."""
    if isinstance(body, dict):
        return {key: without_timings(value) for key, value in body.items() if key not in TIMING_KEYS}
    if isinstance(body, list):
        return [without_timings(item) for item in body]
    return body


def metric(url: str, name: str, model: str) -> float:
    prefix = f'{name}{{model="{model}"}} '
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


def v2_image_request(shape: list[int]) -> bytes:
    count = 1
    for size in shape:
        count *= size
    data = [((index * 37) % 101) / 101.0 for index in range(count)]
    return json.dumps({"inputs": [{"name": "image", "shape": shape, "datatype": "FP32", "data": data}]}).encode()


@contextmanager
def ready(server: WorkersServer) -> Iterator[WorkersServer]:
    """`server` once ready; stopped at the end, where it must exit 0."""
    try:
        server.wait_ready()
        yield server
    finally:
        status = server.stop()
    assert status == 0, server.log_path.read_text()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[WorkersServer]:
    with ready(WorkersServer(tmp_path_factory.mktemp("workers") / "serve.log")) as server:
        yield server
    assert server.segments() == []


@pytest.fixture(scope="module")
def reference():
    """The single-process server on the same models, in this process."""
    app = create_app(make_settings(BUNDLED, models=MODELS))
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, START_TIMEOUT_S, "the reference's readiness")
        yield client


def test_answers_are_those_of_the_single_process_server(served, reference):
    samples = load_samples()
    requests = [
        *prepared_requests("classify", samples, {"attention": "ea"})[:3],
        *prepared_requests("segment", samples, {"attention": "ea"}),
    ]
    for request in requests:
        headers = {"content-type": request.content_type}
        expected = reference.post(request.url, content=request.body, headers=headers)
        answer = httpx.post(f"{served.url}{request.url}", content=request.body, headers=headers, timeout=30)
        assert answer.status_code == expected.status_code == 200, answer.text
        assert without_timings(answer.json()) == without_timings(expected.json()), request.url
    body = v2_image_request([2, 3, 64, 64])
    path = f"/v2/models/{CLASSIFIER}/infer"
    expected = reference.post(path, content=body, headers={"content-type": "application/json"})
    answer = httpx.post(f"{served.url}{path}", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == expected.status_code == 200, answer.text
    assert without_timings(answer.json()) == without_timings(expected.json())
    for path in ("/v2/models/eamlp-ea-tiny", "/v2/models/eanet-ea-tiny", "/v2/health/ready"):
        assert httpx.get(f"{served.url}{path}", timeout=10).json() == reference.get(path).json(), path
    models = httpx.get(f"{served.url}/v1/models", timeout=10).json()["models"]
    assert [(m["name"], m["state"], m["backend"]) for m in models] == [
        (m["name"], m["state"], m["backend"]) for m in reference.get("/v1/models").json()["models"]
    ]


def test_requests_on_both_workers_meet_in_one_batch(served):
    """BATCH requests sent together, half on each worker's connections, are computed as one
    batch by the model process (every answer says batch size BATCH); the counters of /metrics,
    from any worker, are the model process's."""
    by_worker = connections_per_worker(served.url, BATCH // 2)
    clients = [client for held in by_worker.values() for client in held]
    image = image_bytes((255, 0, 0), (64, 64))
    items_before = metric(served.url, "nv_inference_count_total", CLASSIFIER)
    batches_before = metric(served.url, "nv_inference_exec_count_total", CLASSIFIER)
    try:
        with ThreadPoolExecutor(len(clients)) as pool:
            for _ in range(5):  # bounded: on a loaded machine a burst may straddle the queue delay
                barrier = threading.Barrier(len(clients))
                answers = list(pool.map(lambda client, start=barrier: send_at(start, client, image), clients))
                assert [answer.status_code for answer in answers] == [200] * len(clients)
                assert {answer.headers[WORKER_HEADER] for answer in answers} == set(by_worker)
                if all(answer.json()["batch_size"] == BATCH for answer in answers):
                    break
            else:
                pytest.fail("no burst formed one batch across both workers")
    finally:
        for client in clients:
            client.close()
    items = metric(served.url, "nv_inference_count_total", CLASSIFIER) - items_before
    batches = metric(served.url, "nv_inference_exec_count_total", CLASSIFIER) - batches_before
    assert items > batches > 0
    metrics_text = httpx.get(f"{served.url}/metrics", timeout=10).text
    assert f'easerve_http_requests_total{{code="200",model="{CLASSIFIER}"}}' in metrics_text


def test_bad_inputs_and_budgets_are_refused_without_failing_others(served, reference):
    cases = [
        (f"/v1/classify?model={CLASSIFIER}", b"\x89PNG\r\n\x1a\nnot an image", "image/png"),
        (f"/v2/models/{CLASSIFIER}/infer", v2_image_request([1, 3, 32, 32]), "application/json"),
        (f"/v2/models/{CLASSIFIER}/infer", b'{"inputs": [{"name": "image"}]}', "application/json"),
        (f"/v2/models/{SEGMENTER}/infer", v2_image_request([1, 3, 12, 16]), "application/json"),
    ]
    # Sixteen 5000 x 5000 images to segment: over the request's memory budget (413), from headers.
    huge = image_bytes((0, 0, 0), (5000, 5000))
    files = [("file", (f"{index}.png", huge, "image/png")) for index in range(16)]
    budgets = httpx.Request("POST", "http://x/v1/segment", files=files)
    cases.append((f"/v1/segment?model={SEGMENTER}", budgets.read(), budgets.headers["content-type"]))
    valid = image_bytes((0, 0, 255), (64, 64))
    with ThreadPoolExecutor(4) as pool:
        good = [
            pool.submit(httpx.post, f"{served.url}/v1/classify", content=valid, headers=PNG, timeout=30)
            for _ in range(8)
        ]
        for path, body, content_type in cases:
            headers = {"content-type": content_type}
            expected = reference.post(path, content=body, headers=headers)
            answer = httpx.post(f"{served.url}{path}", content=body, headers=headers, timeout=30)
            assert 400 <= expected.status_code < 500, expected.text[:300]
            assert (answer.status_code, answer.json()) == (expected.status_code, expected.json()), path
        assert [future.result().status_code for future in good] == [200] * len(good)


def deadline_failures(url: str, model: str) -> float:
    """Requests the model process's batcher answered 504 (its failure counter)."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("nv_inference_request_failure_total{") and f'model="{model}"' in line:
            if 'reason="deadline_exceeded"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_deadline_crosses_to_the_model_process(served):
    """A 150 ms deadline behind the segmenter's 400 ms queue delay: 504, and the model process's
    batcher saw the deadline pass while the request was queued there (its failure counter)."""
    scene = load_samples().scenes[0].png
    before = deadline_failures(served.url, SEGMENTER)
    late = httpx.post(f"{served.url}/v1/segment?timeout=0.15", content=scene, headers=PNG, timeout=30)
    assert late.status_code == 504, late.text
    assert "deadline exceeded" in late.json()["error"]
    wait_until(lambda: deadline_failures(served.url, SEGMENTER) > before, 10, "the model process's 504")
    assert httpx.post(f"{served.url}/v1/segment", content=scene, headers=PNG, timeout=30).status_code == 200


def test_a_killed_worker_is_restarted_and_only_its_requests_are_lost(tmp_path):
    server = WorkersServer(tmp_path / "serve.log")
    try:
        server.wait_ready()
        assert len(server.segments()) == 2
        by_worker = connections_per_worker(server.url, 1)
        (victim, (victim_client,)), (survivor, (survivor_client,)) = by_worker.items()
        image = image_bytes((0, 255, 0), (64, 64))
        stop = threading.Event()
        survivor_answers: list[object] = []
        victim_answers: list[object] = []

        def keep_sending(client: httpx.Client, outcomes: list[object]) -> None:
            while not stop.is_set() and len(outcomes) < 300:
                try:
                    answer = client.post(f"/v1/classify?model={CLASSIFIER}", content=image, headers=PNG)
                except httpx.TransportError as error:
                    outcomes.append(type(error).__name__)
                    continue
                outcomes.append((answer.status_code, answer.headers[WORKER_HEADER]))

        senders = [
            threading.Thread(target=keep_sending, args=(survivor_client, survivor_answers)),
            threading.Thread(target=keep_sending, args=(victim_client, victim_answers)),
        ]
        for sender in senders:
            sender.start()
        try:
            wait_until(lambda: len(victim_answers) >= 3, 30, "the victim's first answers")
            os.kill(int(victim), signal.SIGKILL)

            def restarted() -> bool:
                with httpx.Client(base_url=server.url, timeout=10) as fresh:
                    worker = fresh.get("/readyz")
                return worker.status_code == 200 and worker.headers[WORKER_HEADER] not in (victim, survivor)

            wait_until(restarted, START_TIMEOUT_S, "a new worker answering in place of the killed one")
            count = len(survivor_answers)
            wait_until(lambda: len(survivor_answers) >= count + 3, 30, "the survivor's answers after the restart")
        finally:
            stop.set()
            for sender in senders:
                sender.join(30)
        # Every request on the surviving worker answered; on the killed one's connection, only
        # what was in flight there failed (the client's next request reconnects, to any worker).
        assert survivor_answers and set(survivor_answers) == {(200, survivor)}
        assert {outcome for outcome in victim_answers if not isinstance(outcome, tuple)} <= {
            "RemoteProtocolError",
            "ReadError",
            "ConnectError",
            "WriteError",
        }
        assert all(outcome[0] == 200 for outcome in victim_answers if isinstance(outcome, tuple))
        # The killed worker's arena was unlinked; its replacement has one of its own.
        wait_until(lambda: len(server.segments()) == 2, 10, "two segments again")
        victim_client.close()
        survivor_client.close()
        new_answer = httpx.post(f"{server.url}/v1/classify", content=image, headers=PNG, timeout=30)
        assert new_answer.status_code == 200
    finally:
        status = server.stop()
    assert status == 0, server.log_path.read_text()
    assert server.segments() == []
    assert "leaked shared_memory" not in server.log_path.read_text()


def test_sigterm_answers_what_every_worker_holds_and_exits_zero(tmp_path):
    """Clients on both workers while SIGTERM arrives: every request is answered (200, or 503
    once draining), none is dropped; exit 0; no segment left."""
    server = WorkersServer(tmp_path / "serve.log")
    outcomes: list[object] = []
    try:
        server.wait_ready()
        by_worker = connections_per_worker(server.url, 2)
        image = image_bytes((255, 255, 0), (64, 64))
        answered = threading.Event()

        def client(http: httpx.Client) -> None:
            for _ in range(40):
                try:
                    response = http.post(f"/v1/classify?model={CLASSIFIER}", content=image, headers=PNG)
                except httpx.ConnectError:
                    return  # the listener has closed: the request was never accepted
                except httpx.TransportError as error:
                    outcomes.append(type(error).__name__)  # accepted, then dropped: must never happen
                    return
                outcomes.append(response.status_code)
                answered.set()
                if response.status_code == 503:
                    return

        threads = [threading.Thread(target=client, args=(http,)) for held in by_worker.values() for http in held]
        for thread in threads:
            thread.start()
        assert answered.wait(30)
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(60)
    finally:
        status = server.stop()
    assert status == 0, server.log_path.read_text()
    assert outcomes and set(outcomes) <= {200, 503}, outcomes
    assert server.segments() == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--engine", "ray"), "--engine local"),
    ],
)
def test_combinations_that_cannot_work_are_refused(flags, message):
    result = subprocess.run(
        serve_command(BUNDLED, CLASSIFIER, free_port(), "--http-workers", "2", *flags),
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stdout


def model_repository(tmp_path: Path) -> Path:
    """A weights folder holding a copy of the bundled classifier (flat layout: version 1)."""
    shutil.copytree(BUNDLED / CLASSIFIER, tmp_path / "weights" / CLASSIFIER)
    return tmp_path / "weights"


def add_version(repository: Path, version: int, broken: bool = False) -> None:
    """`<model>/<version>/`: the same graphs again (a new export), or with a wrong hash."""
    folder = repository / CLASSIFIER / str(version)
    folder.mkdir()
    for path in (repository / CLASSIFIER).glob("*.onnx"):
        shutil.copy(path, folder / path.name)
    manifest = json.loads((repository / CLASSIFIER / "manifest.json").read_text())
    if broken:
        manifest["onnx"]["sha256"] = "0" * 64
    # Written whole at once: a poll must never read half a manifest.
    (folder / "manifest.json.tmp").write_text(json.dumps(manifest))
    os.replace(folder / "manifest.json.tmp", folder / "manifest.json")


def versions_served(client: httpx.Client) -> list[str]:
    return client.get(f"/v2/models/{CLASSIFIER}").json()["versions"]


def index_entry(client: httpx.Client) -> dict[str, str]:
    return {entry["name"]: entry for entry in client.post("/v2/repository/index").json()}[CLASSIFIER]


def classify_status(client: httpx.Client) -> int:
    image = image_bytes((0, 0, 255), (64, 64))
    return client.post(f"/v1/classify?model={CLASSIFIER}", content=image, headers=PNG).status_code


def new_worker(url: str, known: set[str]) -> tuple[str, httpx.Client]:
    """A connection to a worker started after those in `known` (their pids), and its pid."""

    def connected() -> bool:
        client = httpx.Client(base_url=url, timeout=30)
        worker = client.get("/readyz")
        if worker.status_code == 200 and worker.headers[WORKER_HEADER] not in known:
            found.append((worker.headers[WORKER_HEADER], client))
            return True
        client.close()
        return False

    found: list[tuple[str, httpx.Client]] = []
    wait_until(connected, START_TIMEOUT_S, "a worker started in place of a killed one")
    return found[0]


def controlled_workers(tmp_path: Path, repository: Path, mode: str, *flags: str) -> WorkersServer:
    """Two HTTP workers on `repository` with `--model-control mode`, starting (`ready` waits for
    them and stops them)."""
    flags = ("--http-workers", "2", "--shutdown-grace", "0.5", "--log-level", "warning", *flags)
    flags += ("--model-control", mode, "--keep-alive-timeout", "120")  # each client stays on its worker
    return WorkersServer(tmp_path / "serve.log", repository, flags)


def test_model_control_asked_of_any_worker_is_followed_by_every_worker(tmp_path):
    """Load, unload and a failed load asked of one worker: the model process does them, the
    worker that asked answers once it serves the new state, the other worker follows, and a
    worker started again later serves what the model process serves (not the newest folder on
    disk, not a model it unloaded)."""
    repository = model_repository(tmp_path)
    with ready(controlled_workers(tmp_path, repository, "explicit")) as server:
        by_worker = connections_per_worker(server.url, 1)
        (asking_pid, (asking,)), (other_pid, (other,)) = by_worker.items()
        assert versions_served(asking) == versions_served(other) == ["1"]
        add_version(repository, 2)
        assert asking.post(f"/v2/repository/models/{CLASSIFIER}/load").status_code == 200
        assert versions_served(asking) == ["2"]
        wait_until(lambda: versions_served(other) == ["2"], 30, "the other worker following version 2")
        assert index_entry(other) == {"name": CLASSIFIER, "version": "2", "state": "READY", "reason": ""}
        assert classify_status(asking) == classify_status(other) == 200

        assert other.post(f"/v2/repository/models/{CLASSIFIER}/unload").status_code == 200
        assert classify_status(other) == 503
        wait_until(lambda: classify_status(asking) == 503, 30, "the asking worker following the unload")
        assert index_entry(asking)["state"] == "UNAVAILABLE"
        assert asking.post(f"/v2/repository/models/{CLASSIFIER}/load").status_code == 200
        assert classify_status(asking) == 200
        wait_until(lambda: classify_status(other) == 200, 30, "the other worker following the load")

        add_version(repository, 3, broken=True)
        failed = other.post(f"/v2/repository/models/{CLASSIFIER}/load")
        assert failed.status_code == 400 and "sha256" in failed.json()["error"]
        assert "version 3 failed" in index_entry(asking)["reason"]
        assert versions_served(asking) == versions_served(other) == ["2"]
        assert asking.post("/v2/repository/models/nope/load").status_code == 404
        assert classify_status(asking) == classify_status(other) == 200

        # Started again while the newest folder (3) is one the model process refused: version 2.
        pids = set(by_worker)
        os.kill(int(other_pid), signal.SIGKILL)
        other.close()
        restarted_pid, restarted = new_worker(server.url, pids)
        assert versions_served(restarted) == ["2"] and classify_status(restarted) == 200
        # Started again after an unload: ready, with the model unloaded (not failing to start).
        assert asking.post(f"/v2/repository/models/{CLASSIFIER}/unload").status_code == 200
        os.kill(int(asking_pid), signal.SIGKILL)
        asking.close()
        _, again = new_worker(server.url, pids | {restarted_pid})
        assert classify_status(again) == 503 and index_entry(again)["state"] == "UNAVAILABLE"
        wait_until(lambda: classify_status(restarted) == 503, 30, "the other worker following the unload")
        restarted.close()
        again.close()


def test_poll_mode_changes_reach_every_worker(tmp_path):
    repository = model_repository(tmp_path)
    with ready(controlled_workers(tmp_path, repository, "poll", "--repository-poll-s", "0.2")) as server:
        clients = list(connections_per_worker(server.url, 1).values())
        add_version(repository, 2)
        for (client,) in clients:
            wait_until(lambda client=client: versions_served(client) == ["2"], 30, "each worker following version 2")
            assert classify_status(client) == 200
        shutil.rmtree(repository / CLASSIFIER)
        for (client,) in clients:
            wait_until(lambda client=client: classify_status(client) == 503, 30, "each worker following the unload")
            client.close()


def test_arena_regions_given_back_merge_so_the_whole_arena_fits_again():
    regions = RegionAllocator(4096)
    first, second, third = (regions.allocate(1000) for _ in range(3))
    assert regions.allocate(4096) is None
    for region in (second, first, third):
        regions.release(region)
    assert regions.allocate(4096) == Region(0, 4096)


@pytest.mark.parametrize("light", [True, False])
def test_an_http_worker_makes_only_light_answers_on_its_event_loop(light):
    """Small outputs with a light answer (a class ranking) are answered where they arrive; any
    other answer (masks, part labels, images) on a thread, however small its outputs."""
    import asyncio
    import threading
    import time
    from types import SimpleNamespace

    import numpy as np

    from easerve.artifacts.manifest import load_manifest
    from easerve.service.batcher import BatchOutcome, Finish
    from easerve.service.frontend.shared_batcher import SharedMemoryBatcher

    manifest = load_manifest(BUNDLED / "eamlp-ea-tiny")
    image = manifest.inputs[0]
    inputs = {image.name: np.zeros((1, *image.shape[1:]), np.float32)}

    class Channel:
        async def infer(self, model, inputs, deadline, output_bytes):
            return BatchOutcome(
                {manifest.outputs[0].name: np.zeros((1, len(manifest.labels)), np.float32)}, 0.0, 0.001, 1
            )

    batcher = SharedMemoryBatcher(SimpleNamespace(name="eamlp-ea-tiny", manifest=manifest), Channel())

    async def answered_on_the_loop() -> bool:
        finish = Finish(lambda outcome: threading.get_ident(), light=light)
        outcome = await batcher.submit(inputs, time.perf_counter() + 5, finish)
        return outcome.answer == threading.get_ident()

    assert asyncio.run(answered_on_the_loop()) is light
