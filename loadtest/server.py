"""The server under test: one started on loopback for the duration of a load test, or one
already running; and what it serves (`/v1/models`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

POLL_INTERVAL_S = 0.5
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# How often the resident memory of a server under load is read.
RSS_INTERVAL_S = 0.05
MB = 1024 * 1024
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ServedModel:
    """A model as `/v1/models` describes it."""

    name: str
    task: str
    attention: str
    backend: str
    input_size: str  # what the network sees: "512x512", "1024 points", "" for a latent


def _input_size(preprocessing: dict) -> str:
    if "image_size" in preprocessing:
        height, width = preprocessing["image_size"]
        return f"{width}x{height}"
    if "num_points" in preprocessing:
        return f"{preprocessing['num_points']} points"
    return ""


# Where a server says it is ready (200): easerve's readiness route.
READY_PATH = "/readyz"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def is_ready(url: str, path: str = READY_PATH) -> bool:
    """True when `<url><path>` answers 200."""
    try:
        return httpx.get(f"{url}{path}", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_ready(
    url: str, timeout_s: float, process: subprocess.Popen | None = None, ready_path: str = READY_PATH
) -> None:
    """Block until the server at `url` is ready (`ready_path` answers 200). RuntimeError if
    `process` exits first or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_ready(url, ready_path):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it was ready")
        time.sleep(POLL_INTERVAL_S)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f}s")


@dataclass(frozen=True)
class RunningServer:
    """A server started by `running_server_process`: where it listens and its process."""

    url: str
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def running_server_process(
    command: list[str],
    url: str,
    log_path: Path,
    ready_timeout_s: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    ready_path: str = READY_PATH,
) -> Iterator[RunningServer]:
    """Run `command` (in `cwd`, with `env`: default this process's), a server that listens at
    `url`, its output in `log_path`; yields its URL and process once ready (`ready_path` answers
    200) and stops the server (SIGTERM, then SIGKILL) on exit. RuntimeError naming the log if it
    exits or is not ready within `ready_timeout_s`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        try:
            try:
                wait_ready(url, ready_timeout_s, process, ready_path)
            except RuntimeError as error:
                raise RuntimeError(f"{error}; see {log_path}") from None
            yield RunningServer(url, process)
        finally:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def running_server(
    command: list[str],
    url: str,
    log_path: Path,
    ready_timeout_s: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[str]:
    """`running_server_process` yielding only the URL."""
    with running_server_process(command, url, log_path, ready_timeout_s, env, cwd) as server:
        yield server.url


def process_tree(root: int) -> list[int]:
    """`root` and its descendants (from /proc/<pid>/task/<tid>/children); [] once it is gone."""
    pids: list[int] = []
    stack = [root]
    while stack:
        pid = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        pids.append(pid)
        for task in tasks:
            with suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as children:
                stack += [int(child) for child in children.read().split()]
    return pids


def tree_rss_bytes(root: int) -> int:
    """Resident memory of `root` and its descendants (0 once gone, or a zombie)."""
    total = 0
    for pid in process_tree(root):
        with suppress(OSError, ValueError, IndexError), open(f"/proc/{pid}/statm") as statm:
            total += int(statm.read().split()[1]) * PAGE_SIZE
    return total


class RssSampler(threading.Thread):
    """Samples the resident memory of a process tree every `RSS_INTERVAL_S`; kills the tree (SIGKILL) when it
    passes `cap_mb` (0: no cap), so an attack cannot take the shared machine down with it."""

    def __init__(self, root: int, cap_mb: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.root = root
        self.cap_bytes = int(cap_mb * MB)
        self.peak_bytes = 0
        self.window_peak_bytes = 0  # the peak since `start_window`
        self._window_lock = threading.Lock()
        self.killed_at_mb: float | None = None
        self._stop_event = threading.Event()

    def sample(self) -> int:
        rss = tree_rss_bytes(self.root)
        self.peak_bytes = max(self.peak_bytes, rss)
        with self._window_lock:
            self.window_peak_bytes = max(self.window_peak_bytes, rss)
        if self.cap_bytes and rss > self.cap_bytes and self.killed_at_mb is None:
            self.killed_at_mb = rss / MB
            for pid in process_tree(self.root):
                with suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        return rss

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(RSS_INTERVAL_S)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=2.0)

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / MB

    def start_window(self) -> float:
        """Starts a new window for `window_peak_mb` (the whole run's peak is kept); the RSS now (MB)."""
        with self._window_lock:
            self.window_peak_bytes = 0
        return self.current_mb()

    @property
    def window_peak_mb(self) -> float:
        return self.window_peak_bytes / MB

    def current_mb(self) -> float:
        return self.sample() / MB


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) spent so far by process `pid` and all its descendants: those
    alive now, and those that have exited and been waited for by a process of the tree (counted
    in their parent's children times, so a helper process that comes and goes is not lost).
    psutil.NoSuchProcess if `pid` is gone; a descendant that exits while being read is skipped."""
    import psutil  # the loadtest extra; imported here so that the rest of this module needs none

    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            if process is root:
                raise
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


@contextmanager
def local_server(
    log_path: Path, ready_timeout_s: float, weights_dirs: list[Path] | None = None
) -> Iterator[RunningServer]:
    """`easerve serve` on a free loopback port (`running_server_process`) with every model of
    `weights_dirs` (default: the service's own default, the bundled models)."""
    port = free_port()
    command = [sys.executable, "-m", "easerve.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    for weights_dir in weights_dirs or []:
        command += ["--weights-dir", str(weights_dir)]
    with running_server_process(command, f"http://127.0.0.1:{port}", log_path, ready_timeout_s) as server:
        yield server


def served_models(url: str) -> list[ServedModel]:
    """The models the server at `url` serves, from `/v1/models`."""
    response = httpx.get(f"{url}/v1/models", timeout=10.0)
    response.raise_for_status()
    body = response.json()
    return [
        # A model's own backend is unset until it has loaded; the server's choice stands in.
        ServedModel(
            entry["name"],
            entry["task"],
            entry["attention"],
            entry["backend"] or body["backend"],
            _input_size(entry["preprocessing"]),
        )
        for entry in body["models"]
    ]
