"""`easerve serve` as a real process: SIGTERM drains and exits 0; the serving code never loads
torch, training or export."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx
from onnx_fixtures import model_name
from service_helpers import clean_env, image_bytes, serve_command, wait_until

from easerve.loadtest.server import free_port

REPO = Path(__file__).resolve().parents[2]
CLASSIFIER = model_name("fixcls")


def test_sigterm_answers_everything_in_flight_and_exits_zero(weights_dir, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        serve_command(weights_dir, CLASSIFIER, port, "--shutdown-grace", "1"),
        cwd=REPO,
        env=clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return httpx.get(f"{url}/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 60, "the served process to be ready")
        outcomes: list[object] = []
        first_answer = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                for _ in range(20):
                    try:
                        response = http.post(
                            "/v1/classify", content=image_bytes((255, 0, 0)), headers={"content-type": "image/png"}
                        )
                    except httpx.ConnectError:
                        return  # the listener has closed: the request was never accepted
                    except httpx.TransportError as error:
                        outcomes.append(error)  # accepted, then dropped: what must never happen
                        return
                    outcomes.append(response.status_code)
                    first_answer.set()
                    if response.status_code == 503:
                        return

        clients = [threading.Thread(target=client) for _ in range(8)]
        for thread in clients:
            thread.start()
        assert first_answer.wait(30)
        process.send_signal(signal.SIGTERM)
        for thread in clients:
            thread.join(30)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    assert outcomes and set(outcomes) <= {200, 503}, outcomes
    log_text = (tmp_path / "serve.log").read_text()
    assert "draining" in log_text
    # Its start-up heap left out of the garbage collector's passes (service.collector).
    assert "start-up objects frozen" in log_text


def test_serving_never_imports_torch_training_or_export(weights_dir):
    script = textwrap.dedent(f"""
        import sys, warnings
        from pathlib import Path
        warnings.filterwarnings("ignore")
        from fastapi.testclient import TestClient
        import easerve.service.cli
        from easerve.service.app import create_app
        from easerve.service.settings import Settings
        app = create_app(Settings(weights_dirs=[Path({str(weights_dir)!r})]))
        with TestClient(app) as client:
            while client.get("/readyz").status_code != 200:
                pass
            assert client.post("/v1/generate", json={{"label": 1}}).status_code == 200
        forbidden = ("torch", "easerve.training", "easerve.export", "easerve.model_defs")
        loaded = sorted(name for name in forbidden if name in sys.modules)
        print("LOADED", loaded)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout
