"""The container setup without a docker daemon: compose.yaml and its host-network variant are
valid for the installed compose tool (v2 `docker compose` or v1 `docker-compose`), and the
images' dependency lists come from pyproject.toml, and docker/smoke.sh fails loudly where it
cannot run. `make docker-smoke` builds and runs the images."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


COMPOSE = _compose_command()
needs_compose = pytest.mark.skipif(
    COMPOSE is None,
    reason="neither `docker compose` nor `docker-compose` is installed (make docker-smoke installs them)",
)


def compose(*args: str) -> str:
    result = subprocess.run([*COMPOSE, *args], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_smoke_function(body: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """`body` run by bash with docker/smoke.sh sourced (its functions defined, nothing run), in
    `cwd`, with `env` added to the environment."""
    script = f"source {REPO / 'docker' / 'smoke.sh'}; {body}"
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, capture_output=True, text=True, env={**os.environ, **env}, timeout=60
    )


def service_blocks(config: str) -> dict[str, str]:
    """Each service's lines in the normalised output of `compose config` (no YAML parser here)."""
    blocks: dict[str, str] = {}
    name = None
    in_services = False
    for line in config.splitlines():
        if not line.startswith(" "):
            in_services, name = line == "services:", None
        elif in_services and not line.startswith("   ") and line.strip().endswith(":"):
            name = line.strip()[:-1]
            blocks[name] = ""
        elif name:
            blocks[name] += line + "\n"
    return blocks


@needs_compose
def test_compose_file_is_valid():
    compose("-f", "compose.yaml", "config", "--quiet")


@needs_compose
def test_plain_up_starts_only_the_cpu_service_and_profiles_add_the_others():
    services = service_blocks(compose("-f", "compose.yaml", "config"))
    assert sorted(services) == ["api", "api-gpu", "loadtest"]
    assert "profiles:" not in services["api"]
    assert "- loadtest" in services["loadtest"]
    assert "- gpu" in services["api-gpu"]


@needs_compose
def test_gpu_service_reserves_nvidia_devices():
    config = compose("-f", "compose.yaml", "--profile", "gpu", "config")
    assert "driver: nvidia" in service_blocks(config)["api-gpu"]


@needs_compose
def test_smoke_render_puts_every_service_on_loopback_without_published_ports(tmp_path):
    # The same function docker/smoke.sh runs before `up`.
    body = f'COMPOSE=({" ".join(COMPOSE)}); WORK="{tmp_path}"; render_compose_file; echo "$COMPOSE_FILE_RENDERED"'
    result = run_smoke_function(body, REPO, EASERVE_PORT="18123")
    assert result.returncode == 0, result.stderr
    rendered = Path(result.stdout.strip())

    services = service_blocks(compose("-f", str(rendered), "--profile", "gpu", "--profile", "loadtest", "config"))
    assert sorted(services) == ["api", "api-gpu", "loadtest"]
    for block in services.values():
        assert "network_mode: host" in block and "ports:" not in block
    assert "EASERVE_HOST: 127.0.0.1" in services["api"]
    assert "LOCUST_HOST: http://127.0.0.1:18123" in services["loadtest"]


def requirements(*args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "docker/requirements.py", "pyproject.toml", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def test_image_dependencies_are_the_serving_ones_without_torch():
    serving = requirements()
    assert any(line.startswith("onnxruntime") for line in serving)
    assert not any(line.startswith("torch") for line in serving)
    assert any(line.startswith("locust") for line in requirements("loadtest", "--only"))
    assert any(line.startswith("setuptools") for line in requirements("--build"))


def test_unknown_extra_is_refused():
    result = subprocess.run(
        [sys.executable, "docker/requirements.py", "pyproject.toml", "nosuch"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode != 0 and "nosuch" in result.stderr


def test_smoke_fails_loudly_when_the_docker_daemon_cannot_start(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for tool in ("docker", "dockerd"):  # `docker info` finds no daemon; dockerd dies at once
        (fake_bin / tool).write_text("#!/bin/sh\necho 'cannot start: no permission' >&2\nexit 1\n")
        (fake_bin / tool).chmod(0o755)

    path = f"{fake_bin}:{os.environ['PATH']}"
    result = run_smoke_function(f'CACHE="{tmp_path}"; start_daemon', tmp_path, PATH=path)

    assert result.returncode != 0
    assert "docker daemon could not start" in result.stderr and "cannot start: no permission" in result.stderr


def test_smoke_refuses_to_start_without_a_model_to_serve(tmp_path):
    (tmp_path / "weights").mkdir()
    result = run_smoke_function(f'EASERVE_USER_WEIGHTS="{tmp_path}/none"; require_models', tmp_path)

    assert result.returncode != 0 and "no model to serve" in result.stderr
