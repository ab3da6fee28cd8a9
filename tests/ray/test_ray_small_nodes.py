"""The audit's small cluster: two 1-CPU nodes (Ray's own `cluster_utils.Cluster`), joined by
`easerve serve --engine ray --address`. With the default reservations (a whole CPU for the
ingress and for each model replica) two replicas cannot all be placed: the log names the
deployment and the flags that lower it, and the probes answer (200, 503) while it waits; with
`--ingress-cpus 0.25 --model-cpus 0.25` the same application is ready and serves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from ray_helpers import BUNDLED_WEIGHTS, SAMPLES, free_port, is_ready, wait_until

pytest.importorskip("ray.serve", reason="needs Ray Serve: pip install 'easerve[ray]'")

from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]

MODEL = "eamlp-ea-tiny"


@pytest.fixture(scope="module")
def small_cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    try:
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def _serve(cluster: Cluster, port: int, log: Path, *flags: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "easerve.cli", "serve", "--engine", "ray", "--address", cluster.address]
    command += ["--port", str(port), "--replicas", "2", "--models", MODEL, "--weights-dir", str(BUNDLED_WEIGHTS)]
    command += ["--intra-op-threads", "1", "--workers", "2", *flags]
    environment = {**os.environ, "RAY_SERVE_SLOW_STARTUP_WARNING_S": "3", "RAY_AUTH_MODE": "token"}
    with log.open("w") as out:  # the child keeps its own descriptor
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment)


def _stopped(process: subprocess.Popen, log: Path) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(90) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_two_one_cpu_nodes_wait_with_the_defaults_and_serve_with_smaller_reservations(small_cluster, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "defaults.log"
    process = _serve(small_cluster, port, log)
    try:
        wait_until(lambda: "--model-cpus" in log.read_text() or process.poll() is not None, 150.0, "the hint")
        assert process.poll() is None, log.read_text()[-3000:]
        wait_until(lambda: _status(f"{url}/healthz") == 200, 60.0, "/healthz while it cannot be placed")
        assert _status(f"{url}/readyz") == 503
    finally:
        _stopped(process, log)
    assert "stopped before the application was running" in log.read_text()

    log = tmp_path / "smaller.log"
    process = _serve(small_cluster, port, log, "--ingress-cpus", "0.25", "--model-cpus", "0.25")
    try:
        wait_until(lambda: is_ready(url) or process.poll() is not None, 200.0, "readiness", pause_s=0.5)
        assert process.poll() is None, log.read_text()[-3000:]
        png = (SAMPLES / "image-star.png").read_bytes()
        answer = httpx.post(f"{url}/v1/classify", content=png, headers={"content-type": "image/png"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["top_k"][0]["label"] == "star"
    finally:
        _stopped(process, log)


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.TransportError:
        return None
