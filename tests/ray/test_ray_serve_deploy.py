"""`serve deploy deploy/ray/serve-config.yaml` against a cluster `ray start` began in another
folder (the audit's DEPLOY_FAILED, "found: none"): the config's relative `weights_dirs: weights`
is found from easerve's source tree, the application runs and answers. The repository's config
with a smaller cluster's numbers: one model, quarter-CPU reservations, a free port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from ray_helpers import SAMPLES, free_port, is_ready, wait_until

pytest.importorskip("ray.serve", reason="needs Ray Serve: pip install 'easerve[ray]'")

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "ray" / "serve-config.yaml"
MODEL = "eamlp-ea-tiny"
BIN = Path(sys.executable).parent


def _small_config(port: int) -> dict:
    config = yaml.safe_load(CONFIG.read_text())
    config["http_options"]["port"] = port
    (application,) = config["applications"]
    assert application["args"]["weights_dirs"] == "weights"  # relative, as shipped
    application["args"].update(models=[MODEL], model_overrides=[], ingress_num_cpus=0.25, model_num_cpus=0.25)
    application.pop("deployments", None)
    return config


def test_serve_deploy_of_the_shipped_config_runs_from_a_cluster_started_elsewhere(tmp_path):
    port, dashboard = free_port(), free_port()
    (tmp_path / "serve-config.yaml").write_text(yaml.safe_dump(_small_config(port)))
    environment = {**os.environ, "RAY_AUTH_MODE": "token"}

    def ray_cli(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / args[0]), *args[1:]],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    started = ray_cli(
        "ray",
        "start",
        "--head",
        "--num-cpus",
        "2",
        "--port",
        str(free_port()),
        "--dashboard-port",
        str(dashboard),
        "--include-dashboard=true",
        "--node-ip-address",
        "127.0.0.1",
        "--disable-usage-stats",
    )
    try:
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        deployed = ray_cli("serve", "deploy", "serve-config.yaml", "--address", f"http://127.0.0.1:{dashboard}")
        assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: is_ready(url), 180.0, "the deployed application's readiness", pause_s=1.0)
        png = (SAMPLES / "image-star.png").read_bytes()
        answer = httpx.post(f"{url}/v1/classify", content=png, headers={"content-type": "image/png"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["top_k"][0]["label"] == "star"
    finally:
        ray_cli("ray", "stop", "--force", timeout_s=60)
