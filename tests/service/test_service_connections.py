"""Connection hygiene of the served app (`service.connections`, `service.body_limit`): header and
body timeouts (408 + close), idle connections closed, a cap on open connections that keeps the
probes answering, and the open-file limit. Each test runs a real uvicorn server, as `easerve
serve` builds it, on a free loopback port in a thread.

Timing bounds are generous on purpose (the test machine has two busy cores): a timeout must not
fire much before its setting, and must fire within a few seconds of it.
"""

from __future__ import annotations

import collections
import resource
import socket
import statistics
import threading
import time

import httpx
import pytest
from onnx_fixtures import model_name
from service_helpers import image_bytes, make_settings, wait_until

import easerve.service.server as server_module
from easerve.service.app import create_app
from easerve.service.connections import FD_RESERVE, connection_limits, raise_open_file_limit
from easerve.service.server import create_server

CLASSIFIER = model_name("fixcls")
HTTP_IMPLEMENTATIONS = ["httptools", "h11"]


class ServedApp:
    """The classifier fixture served by `create_server` (port 0) in a thread, until exit."""

    def __init__(self, weights_dir, http: str = "httptools", **overrides) -> None:
        settings = make_settings(weights_dir, models=[CLASSIFIER], port=0, log_level="warning", **overrides)
        self.app = create_app(settings)
        self.server = create_server(self.app, settings, http=http)
        self.limits = self.server.config.http.limits
        self.thread = threading.Thread(target=self.server.run, name="served-app", daemon=True)

    def __enter__(self) -> ServedApp:
        self.thread.start()
        wait_until(lambda: self.server.started, what="server start")
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(lambda: httpx.get(f"{self.url}/readyz").status_code == 200, what="readiness")
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def open_connections(self) -> int:
        return len(self.server.server_state.connections)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock


def read_until_closed(sock: socket.socket, timeout_s: float) -> bytes:
    """Everything the server sends until it closes the connection (or `timeout_s` passes)."""
    sock.settimeout(timeout_s)
    received = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:  # closed with bytes of ours unread: what was sent came first
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the connection was not closed within {timeout_s} s; received {received!r}")


def read_response(sock: socket.socket) -> bytes:
    """One complete response with a Content-Length body, read from a keep-alive connection."""
    sock.settimeout(10)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-response: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_open_file_limit_is_raised_and_the_cap_stays_under_it():
    soft = raise_open_file_limit()
    assert soft == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or soft == hard
    limits = connection_limits(1000, 10.0, soft)
    assert limits.max_connections < limits.ceiling == soft - FD_RESERVE
    small = connection_limits(1000, 10.0, open_files=1024)
    assert small.ceiling == 1024 - FD_RESERVE and small.max_connections == small.ceiling - 32
    # The ceiling is what the descriptors allow, not a margin over the cap: floods of idle
    # connections far past the cap still leave room for a probe to be accepted and answered.
    assert connection_limits(20, 10.0, 20000) == type(small)(10.0, 20, 20000 - FD_RESERVE)


@pytest.mark.parametrize("http", HTTP_IMPLEMENTATIONS)
def test_incomplete_headers_are_answered_408_and_closed(weights_dir, http):
    with ServedApp(weights_dir, http=http, header_timeout_s=0.5) as served:
        sock = served.connect()
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")  # the blank line never comes
        response = read_until_closed(sock, 10)
        elapsed = time.monotonic() - started
        sock.close()
    assert response.startswith(b"HTTP/1.1 408 "), response
    assert b"connection: close" in response.lower()
    assert 0.4 <= elapsed < 5, elapsed


def test_trickled_headers_do_not_extend_the_header_timeout(weights_dir):
    with ServedApp(weights_dir, header_timeout_s=1.0) as served:
        sock = served.connect()
        stop = threading.Event()

        def trickle() -> None:
            # A byte every 0.1 s: uvicorn's keep-alive timer is disarmed by the first; this one is not.
            for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 500:
                if stop.is_set():
                    return
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.1)

        sender = threading.Thread(target=trickle)
        started = time.monotonic()
        sender.start()
        try:
            response = read_until_closed(sock, 15)
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            sender.join()
            sock.close()
    assert response.startswith(b"HTTP/1.1 408 "), response
    assert 0.9 <= elapsed < 8, elapsed


def test_header_timeout_counts_from_the_end_of_the_previous_response(weights_dir):
    with ServedApp(weights_dir, header_timeout_s=0.8, keep_alive_timeout_s=30) as served:
        sock = served.connect()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        time.sleep(0.5)  # idle on the keep-alive connection: the clock runs from the response
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        response = read_until_closed(sock, 10)
        elapsed = time.monotonic() - started
        sock.close()
    assert response.startswith(b"HTTP/1.1 408 "), response
    assert elapsed < 0.8 + 4, elapsed


@pytest.mark.parametrize("http", HTTP_IMPLEMENTATIONS)
def test_a_connection_that_never_sends_a_byte_is_closed_silently(weights_dir, http):
    with ServedApp(weights_dir, http=http, header_timeout_s=0.5) as served:
        sock = served.connect()
        started = time.monotonic()
        response = read_until_closed(sock, 10)
        elapsed = time.monotonic() - started
        sock.close()
    assert response == b""
    assert 0.4 <= elapsed < 5, elapsed


@pytest.mark.parametrize("http", HTTP_IMPLEMENTATIONS)
def test_idle_keep_alive_connection_is_closed(weights_dir, http):
    with ServedApp(weights_dir, http=http, keep_alive_timeout_s=0.5, header_timeout_s=30) as served:
        sock = served.connect()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        rest = read_until_closed(sock, 10)
        elapsed = time.monotonic() - started
        sock.close()
    assert rest == b""
    assert 0.4 <= elapsed < 5, elapsed


@pytest.mark.parametrize("http", HTTP_IMPLEMENTATIONS)
def test_a_body_not_received_in_time_is_answered_408_and_closed(weights_dir, http):
    with ServedApp(weights_dir, http=http, body_timeout_s=0.5) as served:
        sock = served.connect()
        started = time.monotonic()
        sock.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
            b"Content-Length: 5000\r\n\r\n" + image_bytes((255, 0, 0))[:100]
        )
        response = read_until_closed(sock, 10)
        elapsed = time.monotonic() - started
        sock.close()
        assert httpx.get(f"{served.url}/healthz").status_code == 200
    assert response.startswith(b"HTTP/1.1 408 "), response
    assert b"connection: close" in response.lower()
    assert b"not received within" in response
    assert 0.4 <= elapsed < 5, elapsed


def test_a_body_slower_than_the_requests_own_deadline_is_408_not_504(weights_dir):
    with ServedApp(weights_dir) as served:  # the body timeout is far longer than the deadline
        sock = served.connect()
        sock.sendall(
            b"POST /v1/classify?timeout=0.5 HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
            b"Content-Length: 5000\r\n\r\n" + image_bytes((255, 0, 0))[:100]
        )
        response = read_until_closed(sock, 10)
        sock.close()
    assert response.startswith(b"HTTP/1.1 408 "), response
    assert b"connection: close" in response.lower()
    assert b"deadline" in response


def test_a_complete_body_is_not_cut_by_the_body_timeout(weights_dir):
    with ServedApp(weights_dir, body_timeout_s=1.0) as served:
        body = image_bytes((255, 0, 0))
        sock = served.connect()
        head = b"POST /v1/classify HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
        sock.sendall(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:50])
        time.sleep(0.3)  # slow, but within the body timeout
        sock.sendall(body[50:])
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.close()


def test_slow_connections_do_not_slow_a_normal_client(weights_dir):
    image = image_bytes((255, 0, 0))
    with ServedApp(weights_dir, header_timeout_s=60) as served, httpx.Client(base_url=served.url) as client:

        def median_latency_s(count: int = 30) -> float:
            latencies = []
            for _ in range(count):
                started = time.perf_counter()
                response = client.post("/v1/classify", content=image, headers={"content-type": "image/png"})
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200
            return statistics.median(latencies)

        median_latency_s(10)  # warm
        baseline = median_latency_s()
        slow = [served.connect() for _ in range(50)]
        try:
            for sock in slow:
                sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: test\r\n")  # and then nothing
            wait_until(lambda: served.open_connections() >= 51, 10, "the slow connections to be open")
            loaded = median_latency_s()
            assert served.open_connections() >= 51  # still open: the header timeout is 60 s
        finally:
            for sock in slow:
                sock.close()
    assert loaded < 3 * baseline + 0.05, (baseline, loaded)


@pytest.mark.parametrize("http", HTTP_IMPLEMENTATIONS)
def test_over_max_connections_probes_still_answer_and_the_rest_get_503(weights_dir, http):
    with ServedApp(weights_dir, http=http, max_connections=20) as served:
        assert served.limits.max_connections == 20 and served.limits.ceiling > 25
        idle = [served.connect() for _ in range(25)]
        try:
            wait_until(lambda: served.open_connections() >= 21, 10, "the idle connections to be open")
            for path, status in [("/healthz", 200), ("/readyz", 200), ("/v1/models", 503)]:
                started = time.monotonic()
                response = httpx.get(f"{served.url}{path}", timeout=10)
                elapsed = time.monotonic() - started
                assert response.status_code == status, (path, response.text)
                assert response.headers["connection"] == "close"
                assert elapsed < 2, (path, elapsed)
            refused = httpx.post(f"{served.url}/v1/classify", content=b"x" * 100, timeout=10)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert "too many open connections" in refused.json()["error"]
        finally:
            for sock in idle:
                sock.close()
        wait_until(lambda: served.open_connections() == 0, 10, "the idle connections to close")
        assert httpx.get(f"{served.url}/v1/models").status_code == 200  # under the cap again


def test_probes_are_answered_through_a_flood_of_idle_connections_past_the_cap(weights_dir):
    with ServedApp(weights_dir, max_connections=20) as served:
        flood = [served.connect() for _ in range(300)]  # far past the cap and its old margin (52)
        try:
            wait_until(lambda: served.open_connections() >= 100, 10, "the flood to be open")
            statuses = [_status(f"{served.url}/healthz") for _ in range(20)]
            statuses += [_status(f"{served.url}/readyz") for _ in range(20)]
            assert statuses == [200] * 40
        finally:
            for sock in flood:
                sock.close()


def test_probes_are_answered_while_thousands_of_idle_clients_keep_reconnecting(weights_dir):
    """The audit's churn: 2,000 idle sockets, each reopened as soon as it is closed (by the
    client here, round after round), past the cap of 20; every probe is still answered."""
    with ServedApp(weights_dir, max_connections=20) as served:
        stop = threading.Event()

        def churn() -> None:
            held = [served.connect() for _ in range(1000)]
            while not stop.is_set():
                for index, sock in enumerate(held):
                    sock.close()
                    if stop.is_set():
                        break
                    try:
                        held[index] = served.connect()
                    except OSError:
                        continue
            for sock in held:
                sock.close()

        churners = [threading.Thread(target=churn, daemon=True) for _ in range(2)]
        for thread in churners:
            thread.start()
        try:
            wait_until(lambda: served.open_connections() >= 100, 20, "the churn to be under way")
            statuses = [_status(f"{served.url}/healthz") for _ in range(40)]
            statuses += [_status(f"{served.url}/readyz") for _ in range(40)]
        finally:
            stop.set()
            for thread in churners:
                thread.join(30)
        assert statuses == [200] * 80, collections.Counter(statuses)


def test_past_the_ceiling_new_connections_are_closed_at_accept(weights_dir, monkeypatch):
    # As if the process could open only 340 files: a ceiling of 84 open connections.
    monkeypatch.setattr(server_module, "raise_open_file_limit", lambda: 340)
    with ServedApp(weights_dir, max_connections=20) as served:
        ceiling = served.limits.ceiling
        assert ceiling == 340 - FD_RESERVE
        opened = [served.connect() for _ in range(ceiling + 30)]
        try:
            # Each one over the ceiling is closed as soon as it is accepted.
            closed_at_once = 0
            for sock in opened[-20:]:
                sock.settimeout(5)
                try:
                    closed_at_once += sock.recv(1) == b""
                except (ConnectionResetError, TimeoutError):
                    closed_at_once += 0
            assert closed_at_once >= 15
            assert served.open_connections() <= ceiling
            # The over-capacity ones that send nothing go within about a second: probes get in.
            wait_until(lambda: _status(f"{served.url}/healthz") == 200, 10, "a probe to be answered despite the flood")
        finally:
            for sock in opened:
                sock.close()


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None
