"""Helpers of the Ray Serve tests: the bundled models, a local Serve application, HTTP waits."""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

BUNDLED_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
SAMPLES = Path(__file__).resolve().parents[2] / "loadtest" / "samples"
READY_TIMEOUT_S = 120.0
# Few threads everywhere: the test machine has 2 cores shared by every replica.
SMALL = {"workers": 2, "intra_op_threads": 1, "inter_op_threads": 1, "log_level": "warning"}


def shut_down_ray() -> None:
    """Serve, then this process's Ray driver, with the garbage collected in between: a Ray object
    (a handle, an object ref) freed after `ray.shutdown()` calls into the closed core worker,
    which exits the whole process (status 1, nothing printed), and the collector frees cyclic
    garbage on whichever thread happens to run it, at any later moment."""
    import ray
    from ray import serve

    serve.shutdown()
    gc.collect()
    ray.shutdown(wait_for_processes=True)


@contextmanager
def two_node_cluster(second_resources: dict[str, float] | None = None) -> Iterator[tuple[Any, Any]]:
    """Ray's own `cluster_utils.Cluster` on this machine, as Ray's tests use it: a 2-CPU head and
    a 1-CPU second node (with `second_resources`), this process its driver; (cluster, second
    node), shut down on exit."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    second = cluster.add_node(num_cpus=1, resources=second_resources or {})
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING")
        yield cluster, second
    finally:
        shut_down_ray()
        cluster.shutdown()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, pause_s: float = 0.2) -> Any:
    """The first truthy value of `predicate()`, polled until `timeout_s`; AssertionError after."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(pause_s)
    raise AssertionError(f"{what} not reached within {timeout_s} s")


def is_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5.0).status_code == 200
    except httpx.HTTPError:
        return False


def run_app(args: dict[str, Any], port: int, proxy_location: str = "EveryNode") -> str:
    """easerve's Ray Serve application built from `args` (`build_app`), served by Serve's HTTP
    proxy on 127.0.0.1:`port` of the connected cluster; its URL once `/readyz` is 200."""
    from ray import serve

    from easerve.service.ray_serve.app import build_app
    from easerve.service.ray_serve.config import APP_NAME

    serve.start(proxy_location=proxy_location, http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: is_ready(url), READY_TIMEOUT_S, "the Ray application's readiness")
    return url


# Run as a driver process of its own by `described_replicas`.
_DESCRIBE_SCRIPT = """
import json, os, sys
import ray
from ray import serve
ray.init(address=sys.argv[1], logging_level="ERROR")
handle = serve.get_deployment_handle(sys.argv[2], app_name=sys.argv[3])
answers = [handle.describe.remote().result() for _ in range(int(sys.argv[4]))]
print(json.dumps(answers), flush=True)
os._exit(0)  # no interpreter shutdown: Serve's handle thread would touch Ray after it
"""


def described_replicas(model: str, calls: int) -> list[dict[str, Any]]:
    """`calls` answers of `describe` by the replicas of `model` (of easerve's application on the
    connected cluster), through a Serve handle in a driver process of its own. A handle starts
    Serve's router thread, which outlives `ray.shutdown()` and makes its process exit (status
    1, without a word) the next time it touches Ray: the test process never holds one."""
    import ray

    from easerve.service.ray_serve.config import APP_NAME

    address = ray.get_runtime_context().gcs_address
    command = [sys.executable, "-c", _DESCRIBE_SCRIPT, address, model, APP_NAME, str(calls)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# v1's timings, v2's parameters, and `/v1/models`' latency model (measured by each process: the
# ingress of a Ray application has none, its replicas have their own).
TIMING_KEYS = frozenset({"timings", "queue_ms", "compute_ms", "total_ms", "latency"})


def without_timings(body: Any) -> Any:
    """A JSON answer without what differs from run to run (the timings, the latency models)."""
    if isinstance(body, dict):
        return {key: without_timings(value) for key, value in body.items() if key not in TIMING_KEYS}
    if isinstance(body, list):
        return [without_timings(item) for item in body]
    return body
