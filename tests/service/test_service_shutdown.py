"""Graceful shutdown (`service.server`, `service.shutdown_headers`): on SIGTERM `/readyz` turns
503 at once, everything is still served for the grace period with `Connection: close`, then the
drain answers new inference requests 503 + Retry-After and finishes what is in flight, and the
server exits 0 having lost no request, even under 64 busy keep-alive clients.

"Lost" means a request written on a connection that got no HTTP response (reset, disconnected);
a refused new connection after the listener closed is not lost, and is counted apart.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import aiohttp
import httpx
from onnx_fixtures import model_name
from service_helpers import SlowRunnerFactory, clean_env, image_bytes, make_settings, serve_command, wait_until

from easerve.loadtest.server import free_port
from easerve.service.app import create_app
from easerve.service.server import create_server

REPO = Path(__file__).resolve().parents[2]
CLASSIFIER = model_name("fixcls")
IMAGE = image_bytes((255, 0, 0))
PNG = {"content-type": "image/png"}


class GatedServer:
    """The classifier on a gated slow runner, served by `create_server` in a thread. The test
    plays the signal handler: `signal()` calls what uvicorn's handler would."""

    def __init__(self, weights_dir, **overrides) -> None:
        self.settings = make_settings(weights_dir, models=[CLASSIFIER], port=0, log_level="warning", **overrides)
        self.factory = SlowRunnerFactory(self.settings, delay_s=0.0)
        self.app = create_app(self.settings, runner_factory=self.factory)
        self.lifecycle = self.app.state.service.lifecycle
        self.server = create_server(self.app, self.settings)
        self.thread = threading.Thread(target=self.server.run, name="gated-server", daemon=True)

    def __enter__(self) -> GatedServer:
        self.thread.start()
        wait_until(lambda: self.server.started, what="server start")
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"
        wait_until(lambda: httpx.get(f"{self.url}/readyz").status_code == 200, what="readiness")
        self.runner = self.factory.runners[CLASSIFIER]
        return self

    def __exit__(self, *exc_info) -> None:
        self.runner.gate.set()
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def signal(self, sig: signal.Signals) -> None:
        self.server.handle_exit(sig, None)

    def post_in_background(self) -> list[httpx.Response | Exception]:
        """POST /v1/classify from a thread of its own; its outcome lands in the list."""
        outcome: list[httpx.Response | Exception] = []

        def post() -> None:
            try:
                outcome.append(httpx.post(f"{self.url}/v1/classify", content=IMAGE, headers=PNG, timeout=30))
            except httpx.HTTPError as error:
                outcome.append(error)

        threading.Thread(target=post, daemon=True).start()
        return outcome


def test_sigterm_stops_readiness_keeps_serving_then_drains(weights_dir):
    with GatedServer(weights_dir, shutdown_grace_s=1.5, drain_timeout_s=30) as served:
        with httpx.Client(base_url=served.url, timeout=30) as client:
            before = client.post("/v1/classify", content=IMAGE, headers=PNG)
            assert before.status_code == 200 and before.headers.get("connection") != "close"

            served.signal(signal.SIGTERM)
            signalled = time.monotonic()
            wait_until(lambda: httpx.get(f"{served.url}/readyz").status_code == 503, 2, "readyz 503")
            assert time.monotonic() - signalled < 1.0
            assert httpx.get(f"{served.url}/readyz").json()["phase"] == "stopping"

            # The grace period: inference still answered, every response closing its connection
            # (this client's keep-alive connection from before the signal included).
            during = client.post("/v1/classify", content=IMAGE, headers=PNG)
            assert during.status_code == 200, during.text
            assert during.headers["connection"] == "close"
            health = client.get("/healthz")
            assert health.status_code == 200 and health.headers["connection"] == "close"

        # One request computing when the drain starts (the runner is held)...
        served.runner.computing.clear()
        served.runner.gate.clear()
        in_flight = served.post_in_background()
        assert served.runner.computing.wait(10)
        wait_until(lambda: served.lifecycle.phase == "draining", 5, "the drain to start")
        assert served.thread.is_alive()

        # ...a new one is refused while it finishes...
        refused = httpx.post(f"{served.url}/v1/classify", content=IMAGE, headers=PNG, timeout=10)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["connection"] == "close"

        # ...and it is answered, then the server exits.
        served.runner.gate.set()
        wait_until(lambda: bool(in_flight), 10, "the request in flight to be answered")
        answer = in_flight[0]
        assert isinstance(answer, httpx.Response) and answer.status_code == 200, answer
        assert answer.headers["connection"] == "close"
        served.thread.join(timeout=15)
        assert not served.thread.is_alive()
        assert served.lifecycle.phase == "stopped"


def test_second_ctrl_c_forces_the_exit(weights_dir):
    with GatedServer(weights_dir, shutdown_grace_s=0, drain_timeout_s=60) as served:
        served.runner.computing.clear()
        served.runner.gate.clear()
        served.post_in_background()
        assert served.runner.computing.wait(10)
        served.signal(signal.SIGINT)
        wait_until(lambda: served.lifecycle.phase == "draining", 5, "the drain to start")
        time.sleep(0.3)
        assert served.thread.is_alive()  # the drain waits for the held request
        served.signal(signal.SIGINT)
        served.thread.join(timeout=10)
        assert not served.thread.is_alive()
        assert served.server.force_exit


# -- a real process under load ------------------------------------------------------------------

CLIENTS = 64
RUNS = 3


async def _sigterm_under_load(weights_dir: Path, log_path: Path) -> tuple[int | None, Counter, float | None]:
    """One run: `easerve serve`, 64 keep-alive clients posting as fast as they can (on a 503
    too, to press on the listener as it closes), SIGTERM. Returns the exit status, the outcomes
    and how long after the signal `/readyz` was first seen 503."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = serve_command(weights_dir, CLASSIFIER, port, "--shutdown-grace", "1")
    environment = clean_env()
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT)
    outcomes: Counter = Counter()
    try:
        async with aiohttp.ClientSession() as probe:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
                try:
                    async with probe.get(f"{url}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)

        signalled = asyncio.Event()
        stop_at = time.monotonic() + 30

        async def client() -> None:
            connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection per client
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=20)) as session:
                while time.monotonic() < stop_at:
                    try:
                        async with session.post(f"{url}/v1/classify", data=IMAGE, headers=PNG) as response:
                            await response.read()
                    except aiohttp.ClientConnectorError:
                        outcomes["refused"] += 1  # a new connection, after the listener closed
                        return
                    except (aiohttp.ClientError, TimeoutError) as error:
                        outcomes["lost"] += 1
                        outcomes[f"lost: {error!r}"[:120]] += 1
                        return
                    phase = "after" if signalled.is_set() else "before"
                    outcomes[f"{response.status} {phase}"] += 1

        clients = [asyncio.create_task(client()) for _ in range(CLIENTS)]
        warmed_up = time.monotonic() + 15
        while outcomes["200 before"] < 2 * CLIENTS and time.monotonic() < warmed_up:
            await asyncio.sleep(0.05)  # every client busy on its keep-alive connection
        process.send_signal(signal.SIGTERM)
        signalled.set()
        sent = time.monotonic()
        unready_after: float | None = None
        async with aiohttp.ClientSession() as probe:
            while unready_after is None and time.monotonic() - sent < 3:
                try:
                    async with probe.get(f"{url}/readyz") as response:
                        if response.status == 503:
                            unready_after = time.monotonic() - sent
                except aiohttp.ClientError:
                    break
        await asyncio.wait_for(asyncio.gather(*clients), 40)
        status = await asyncio.to_thread(process.wait, 40)
    finally:
        if process.poll() is None:
            process.kill()
    return status, outcomes, unready_after


def test_sigterm_under_64_keep_alive_clients_loses_nothing(weights_dir, tmp_path):
    for run in range(RUNS):
        log_path = tmp_path / f"serve-{run}.log"
        status, outcomes, unready_after = asyncio.run(_sigterm_under_load(weights_dir, log_path))
        context = f"run {run}: {dict(outcomes)}\n{log_path.read_text()[-3000:]}"
        assert status == 0, context
        assert outcomes["lost"] == 0, context
        assert unready_after is not None and unready_after < 2.0, context
        assert outcomes["200 before"] > 0 and outcomes["200 after"] > 0, context  # served in the grace
        assert outcomes["503 after"] > 0, context  # then refused while draining
        assert set(outcomes) <= {"200 before", "200 after", "503 after", "refused"}, context
