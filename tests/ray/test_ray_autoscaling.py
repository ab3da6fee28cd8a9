"""A model deployment that autoscales on a real local Ray cluster: from one replica to two under
load (requests queued or computing per replica over `target_ongoing_requests`), both answering,
and back to one when the load stops. Ray's delays are shortened through the model's
`autoscaling_config` option, so the test takes seconds instead of Ray's default minutes."""

from __future__ import annotations

import asyncio
import collections
import json
import time

import httpx
import pytest
from ray_helpers import BUNDLED_WEIGHTS, SAMPLES, SMALL, free_port, run_app, shut_down_ray, wait_until

pytest.importorskip("ray.serve", reason="needs Ray Serve: pip install 'easerve[ray]'")

import ray  # noqa: E402
from ray import serve  # noqa: E402

from easerve.service.ray_serve.config import APP_NAME  # noqa: E402
from easerve.service.ray_serve.deployments import REPLICA_HEADER  # noqa: E402

pytestmark = [
    pytest.mark.ray,
    pytest.mark.timeout(300),
    # Ray's own, on every serve.status() with an autoscaling deployment (nothing set here).
    pytest.mark.filterwarnings("ignore:The `metrics_interval_s` field:DeprecationWarning"),
]

MODEL = "eamlp-ea-tiny"
FAST_AUTOSCALING = {
    "upscale_delay_s": 0.5,
    "downscale_delay_s": 2.0,
    "look_back_period_s": 2.0,
    "metrics_interval_s": 0.5,
}


@pytest.fixture(scope="module")
def url():
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    args = {
        "weights_dirs": [str(BUNDLED_WEIGHTS)],
        "models": [MODEL],
        "model_overrides": [
            f"{MODEL}:min_replicas=1",
            f"{MODEL}:max_replicas=2",
            f"{MODEL}:target_ongoing_requests=2",
            f"{MODEL}:autoscaling_config={json.dumps(FAST_AUTOSCALING)}",
            # Each request waits 100 ms in its replica's queue: load shows as ongoing requests.
            f"{MODEL}:max_queue_delay_ms=100",
        ],
        "ingress_num_cpus": 0.25,
        "model_num_cpus": 0.25,
        **SMALL,
    }
    try:
        yield run_app(args, free_port())
    finally:
        shut_down_ray()


def _running_replicas() -> int:
    return serve.status().applications[APP_NAME].deployments[MODEL].replica_states.get("RUNNING", 0)


async def _load_until(url: str, done, seconds: float) -> collections.Counter[str]:
    """8 closed-loop clients until `done()` or `seconds`; the replicas that answered, counted."""
    png = (SAMPLES / "image-circle.png").read_bytes()
    answered: collections.Counter[str] = collections.Counter()
    end = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < end and not done():
            response = await http.post("/v1/classify", content=png, headers={"content-type": "image/png"})
            assert response.status_code == 200, response.text
            answered[response.headers[REPLICA_HEADER]] += 1

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        await asyncio.gather(*(client(http) for _ in range(8)))
    return answered


def test_a_model_deployment_scales_out_under_load_and_back_in(url):
    assert _running_replicas() == 1
    scaled = asyncio.run(_load_until(url, lambda: _running_replicas() >= 2, 60.0))
    assert _running_replicas() == 2, scaled
    # Both replicas answer under load.
    answered = asyncio.run(_load_until(url, lambda: False, 3.0))
    assert len(answered) == 2, answered
    assert all(name.startswith(f"{MODEL}#") for name in answered)
    # Idle again: back to the minimum.
    wait_until(lambda: _running_replicas() == 1, 60.0, "the scale-in to one replica", pause_s=0.5)
