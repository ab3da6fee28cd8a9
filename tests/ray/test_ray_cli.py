"""`easerve serve --engine ray` as a user runs it: it starts a local cluster, serves the API on
--port through Ray Serve's proxy with --replicas replicas of the model, and on SIGTERM deletes
the application and stops the cluster, exit status 0."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from ray_helpers import BUNDLED_WEIGHTS, SAMPLES, free_port, is_ready, wait_until

pytest.importorskip("ray.serve", reason="needs Ray Serve: pip install 'easerve[ray]'")

from easerve.service.ray_serve.deployments import REPLICA_HEADER  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

MODEL = "eamlp-ea-tiny"


def test_easerve_serve_engine_ray_serves_and_stops_cleanly(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "easerve.cli",
        "serve",
        "--engine",
        "ray",
        "--replicas",
        "2",
        "--models",
        MODEL,
        "--weights-dir",
        str(BUNDLED_WEIGHTS),
        "--port",
        str(port),
        "--intra-op-threads",
        "1",
        "--workers",
        "2",
    ]
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: is_ready(url) or process.poll() is not None, 150.0, "readiness", pause_s=0.5)
            assert process.poll() is None, log_path.read_text()[-3000:]
            png = (SAMPLES / "image-star.png").read_bytes()
            replicas = collections.Counter()
            for _ in range(16):
                answer = httpx.post(f"{url}/v1/classify", content=png, headers={"content-type": "image/png"})
                assert answer.status_code == 200, answer.text
                assert answer.json()["results"][0]["top_k"][0]["label"] == "star"
                replicas[answer.headers[REPLICA_HEADER]] += 1
            assert len(replicas) == 2, replicas
            # The launcher announces the application once Serve reports it running, which may
            # come a poll after the ingress already answers.
            wait_until(lambda: "serving " in log_path.read_text(), 60.0, "the launcher's announcement", pause_s=0.5)
            # The stand-ins that answered the probes while it deployed are gone: its ingress answers.
            wait_until(
                lambda: httpx.get(f"{url}/healthz", timeout=5).json() == {"live": True}, 30.0, "the ingress's /healthz"
            )
            process.send_signal(signal.SIGTERM)
            assert process.wait(90) == 0, log_path.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert "serving eamlp-ea-tiny on http://127.0.0.1" in log_path.read_text()


def test_an_unreachable_cluster_address_exits_non_zero_within_a_minute():
    closed = free_port()  # nothing listens there
    command = [sys.executable, "-m", "easerve.cli", "serve", "--engine", "ray", "--address", f"127.0.0.1:{closed}"]
    command += ["--models", MODEL, "--weights-dir", str(BUNDLED_WEIGHTS)]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert time.monotonic() - started < 60
    assert f"could not join the Ray cluster at 127.0.0.1:{closed}" in result.stdout + result.stderr


def test_the_ray_benchmark_measures_both_servers(tmp_path):
    """`python -m easerve.bench.serve_ray`, as short as it goes: the single-process server and
    the Ray application at one client, and the report with Ray's overhead."""
    command = [
        sys.executable,
        "-m",
        "easerve.bench.serve_ray",
        "--weights-dir",
        str(BUNDLED_WEIGHTS),
        "--concurrency",
        "1",
        "--replicas",
        "1",
        "--duration",
        "1",
        "--warmup",
        "0.5",
        "--out",
        str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = (tmp_path / "bench_serve_ray.md").read_text()
    assert "| easerve serve | 1 |" in report
    assert "| --engine ray --replicas 1 | 1 |" in report
    assert "what each server adds" in report


def test_sigterm_while_deploying_deletes_the_application_and_an_unplaceable_deployment_is_named(tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "easerve.cli", "serve", "--engine", "ray", "--port", str(port)]
    # No node has a GPU: the model's replica can never be placed, so the application deploys for ever.
    command += ["--models", MODEL, "--weights-dir", str(BUNDLED_WEIGHTS), "--model-config", f"{MODEL}:num_gpus=1"]
    log_path = tmp_path / "serve.log"
    environment = {**os.environ, "RAY_SERVE_SLOW_STARTUP_WARNING_S": "3"}
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        try:
            wait_until(
                # Ours, with the hint: Ray's controller logs its own message too.
                lambda: "--model-cpus" in log_path.read_text() or process.poll() is not None,
                120.0,
                "the unplaceable deployment named",
                pause_s=0.5,
            )
            text = log_path.read_text()
            assert process.poll() is None, text[-3000:]
            assert "deploying: " in text and f"{MODEL} 0/1" in text
            assert "WARNING easerve.ray" in text and "GPU" in text  # what it reserves, beside the hint
            # The probes are answered while it deploys, not held by Ray's proxy.
            wait_until(lambda: _probe(port, "/healthz") == 200, 60.0, "/healthz answered while deploying")
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            assert ready.status_code == 503 and ready.json()["phase"] == "deploying"
            assert int(ready.headers["retry-after"]) > 0
            process.send_signal(signal.SIGTERM)
            # Nothing was served: no grace period to wait out (the audit saw it ignore SIGTERM).
            assert process.wait(20) == 0, log_path.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert "stopped before the application was running" in log_path.read_text()


def _probe(port: int, path: str) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code
    except httpx.TransportError:
        return None
