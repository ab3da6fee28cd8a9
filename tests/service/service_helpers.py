"""Shared test helpers for the service: settings, images, a live uvicorn server, slow runners."""

from __future__ import annotations

import io
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI
from PIL import Image

from easerve.service.model_files import ModelFiles
from easerve.service.runners.base import Runner, Tensors
from easerve.service.runners.ort import OrtRunner
from easerve.service.server import DrainingServer
from easerve.service.settings import Settings

with warnings.catch_warnings():
    # starlette asks for httpx2 in its test client; httpx works the same for these tests.
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient  # noqa: F401 - imported from here by the tests

READY_TIMEOUT_S = 20.0
# Small input limits for the shared test app, so each bad-input case is cheap to build.
LIMITS = {
    "max_body_bytes": 2 * 1024 * 1024,
    "max_images_per_request": 4,
    "max_image_pixels": 1_000_000,
    "max_points": 5_000,
}


def make_settings(weights_dir: Path, **overrides) -> Settings:
    """Settings for tests: the fixture models, few threads (the test machine is small)."""
    values = {"weights_dirs": [weights_dir], "workers": 2, "intra_op_threads": 1, "inter_op_threads": 1}
    return Settings(**{**values, **overrides})


def image_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30), fmt: str = "PNG") -> bytes:
    """A solid-colour image of `size` (width, height) encoded as `fmt`."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def wait_until(predicate: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout_s} s")


def rss_mb() -> float:
    """This process's resident memory (Linux: /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class SlowRunner:
    """A real onnxruntime runner that records every batch size it starts (to prove what was,
    and was not, computed), then waits for `gate` to be open and `delay_s` more."""

    def __init__(self, inner: Runner, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.batches: list[int] = []
        self.computing = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    @property
    def backend(self) -> str:
        return "slow-test-runner"

    def run(self, inputs: Tensors) -> Tensors:
        self.batches.append(next(iter(inputs.values())).shape[0])
        self.computing.set()
        self.gate.wait()
        time.sleep(self.delay_s)
        return self.inner.run(inputs)

    def close(self) -> None:
        self.inner.close()


class SlowRunnerFactory:
    """A `RunnerFactory` of SlowRunners; keeps them by model name."""

    def __init__(self, settings: Settings, delay_s: float) -> None:
        self.settings = settings
        self.delay_s = delay_s
        self.runners: dict[str, SlowRunner] = {}

    def __call__(self, files: ModelFiles, max_batch_size: int) -> SlowRunner:
        runner = SlowRunner(OrtRunner(files, self.settings, max_batch_size), self.delay_s)
        self.runners[files.name] = runner
        return runner


class LiveServer:
    """`app` served by DrainingServer on a free loopback port, in a thread, until exit."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = DrainingServer(config, drain=app.state.service.lifecycle.drain)
        self.thread = threading.Thread(target=self.server.run, name="live-server", daemon=True)
        self.url = ""

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_until(lambda: self.server.started, what="server start")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{self.url}/readyz").status_code == 200, what="readiness")
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def metric(self, name: str, model: str) -> float:
        """The value of a one-sample metric for `model` from /metrics (0 if absent)."""
        text = httpx.get(f"{self.url}/metrics").text
        prefix = f'{name}{{model="{model}"}} '
        for line in text.splitlines():
            if line.startswith(prefix):
                return float(line[len(prefix) :])
        return 0.0


def clean_env() -> dict[str, str]:
    """This process's environment without EASERVE_* settings (a served process reads only its flags)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("EASERVE_")}


def serve_command(weights_dir: Path, model: str, port: int, *flags: str) -> list[str]:
    """`easerve serve` of one fixture model on `port`, with few threads, as a real process."""
    return [
        sys.executable, "-m", "easerve.cli", "serve", "--weights-dir", str(weights_dir), "--models", model,
        "--port", str(port), "--workers", "2", "--intra-op-threads", "1", *flags,
    ]  # fmt: skip
