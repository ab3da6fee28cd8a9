"""Closed-loop HTTP load on one endpoint: `concurrency` clients, each sending its next request as
soon as its last one is answered; throughput and latency over a timed window after a warm-up.

Only requests answered inside the window count (their latency is send to answer); the server's
mean batch size over the window comes from its Prometheus counters where it has them, and, given
the server's pid, its CPU time per request from the CPU time of its process tree read at the
window's start and end (`loadtest.server.process_tree_cpu_s`).

An image is sent in one of three transports (`TRANSPORTS`), each body built once per workload
(`image_workload`), so that every request costs the client the same and little.

The clients share the machine with the server, so they must cost it little: hence aiohttp, whose
client costs far less CPU per request than httpx's (see docs/benchmarks.md#what-we-found-and-changed-on-the-way).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field

import aiohttp
import numpy as np
import psutil
from prometheus_client.parser import text_string_to_metric_families

from easerve.loadtest.server import process_tree_cpu_s

REQUEST_TIMEOUT_S = 120.0
ITEMS_COUNTER = "nv_inference_count_total"
BATCHES_COUNTER = "nv_inference_exec_count_total"

# How an image travels: the raw file as the body, one file part of a multipart/form-data body,
# or JSON {"image": "<base64>"} (the three forms the service's image routes accept).
RAW, MULTIPART, JSON_BASE64 = "raw", "multipart", "json"
TRANSPORTS = (RAW, MULTIPART, JSON_BASE64)
# Fixed, so that a multipart body is the same bytes in every run; checked not to occur in the file.
MULTIPART_BOUNDARY = "easerve-bench-serve-3f9c2a7e51d04b8c"


@dataclass(frozen=True)
class Workload:
    """One request, sent again and again: `body` (prebuilt) to `route?model=<model>`."""

    route: str
    model: str
    body: bytes
    content_type: str = "image/png"


def transport_body(image: bytes, transport: str, image_type: str = "image/png") -> tuple[bytes, str]:
    """(body, content type) carrying the encoded `image` (of media type `image_type`) in
    `transport`; ValueError for an unknown transport."""
    if transport == RAW:
        return image, image_type
    if transport == MULTIPART:
        if MULTIPART_BOUNDARY.encode() in image:
            raise ValueError("the image holds the multipart boundary")
        extension = image_type.rsplit("/", 1)[-1]
        head = (
            f"--{MULTIPART_BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="image.{extension}"\r\n'
            f"Content-Type: {image_type}\r\n\r\n"
        )
        tail = f"\r\n--{MULTIPART_BOUNDARY}--\r\n"
        return head.encode() + image + tail.encode(), f"multipart/form-data; boundary={MULTIPART_BOUNDARY}"
    if transport == JSON_BASE64:
        return json.dumps({"image": base64.b64encode(image).decode("ascii")}).encode(), "application/json"
    raise ValueError(f"unknown transport {transport!r}; known: {', '.join(TRANSPORTS)}")


def image_workload(route: str, model: str, image: bytes, transport: str, image_type: str = "image/png") -> Workload:
    """`image` sent to `route?model=<model>` in `transport`, its body built once, here."""
    body, content_type = transport_body(image, transport, image_type)
    return Workload(route, model, body, content_type)


@dataclass(frozen=True)
class LoadRun:
    concurrency: int
    window_s: float
    latencies_ms: tuple[float, ...]  # of the requests answered 200 inside the window
    failures: int  # other answers (or none) inside the window
    mean_batch_size: float | None  # None: the server reports no batch counters
    server_cpu_s: float | None = None  # the server's process tree over the window; None: not read

    @property
    def throughput(self) -> float:
        """Requests answered 200 per second."""
        return len(self.latencies_ms) / self.window_s

    @property
    def server_cpu_ms_per_request(self) -> float | None:
        """The server's CPU time in the window over the requests answered 200 in it."""
        if self.server_cpu_s is None or not self.latencies_ms:
            return None
        return self.server_cpu_s * 1000 / len(self.latencies_ms)

    def percentile_ms(self, percent: float) -> float | None:
        return float(np.percentile(self.latencies_ms, percent)) if self.latencies_ms else None


@dataclass(frozen=True)
class _Window:
    start: float  # time.perf_counter()
    end: float

    def holds(self, moment: float) -> bool:
        return self.start <= moment < self.end


@dataclass
class _Tally:
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0


async def _client(http: aiohttp.ClientSession, workload: Workload, window: _Window, tally: _Tally) -> None:
    headers = {"content-type": workload.content_type}
    params = {"model": workload.model}
    while time.perf_counter() < window.end:
        sent = time.perf_counter()
        try:
            async with http.post(workload.route, params=params, data=workload.body, headers=headers) as response:
                await response.read()
                succeeded = response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            succeeded = False
        answered = time.perf_counter()
        if not window.holds(answered):
            continue
        if succeeded:
            tally.latencies_ms.append((answered - sent) * 1000)
        else:
            tally.failures += 1


async def _batch_counters(http: aiohttp.ClientSession, model: str) -> tuple[float, float] | None:
    """(items inferred, batches executed) so far for `model`; None without a /metrics."""
    async with http.get("/metrics") as response:
        if response.status != 200:
            return None
        text = await response.text()
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("model") == model
    }
    return values.get(ITEMS_COUNTER, 0.0), values.get(BATCHES_COUNTER, 0.0)


def _cpu_s(pid: int | None) -> float | None:
    """The CPU seconds of `pid`'s process tree so far; None without a pid or once it is gone (a
    server that died shows in the failed requests)."""
    if pid is None:
        return None
    try:
        return process_tree_cpu_s(pid)
    except psutil.Error:
        return None


@dataclass(frozen=True)
class _ServerFigures:
    mean_batch_size: float | None
    cpu_s: float | None


async def _server_figures(url: str, model: str, window: _Window, pid: int | None) -> _ServerFigures:
    """The server's mean batch size and (given its `pid`) its process tree's CPU seconds over
    `window`; the CPU is read the moment the window opens and closes, before the counters."""
    async with _session(url, connections=1) as http:
        await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
        cpu_before = _cpu_s(pid)
        before = await _batch_counters(http, model)
        await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
        cpu_after = _cpu_s(pid)
        after = await _batch_counters(http, model)
    cpu_s = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    if before is None or after is None or after[1] <= before[1]:
        return _ServerFigures(None, cpu_s)
    return _ServerFigures((after[0] - before[0]) / (after[1] - before[1]), cpu_s)


def _session(url: str, connections: int) -> aiohttp.ClientSession:
    """Keep-alive connections to `url`, at most `connections` at once."""
    return aiohttp.ClientSession(
        base_url=url,
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )


async def _load(
    url: str, workload: Workload, concurrency: int, warmup_s: float, duration_s: float, server_pid: int | None
) -> LoadRun:
    start = time.perf_counter() + warmup_s
    window = _Window(start, start + duration_s)
    tally = _Tally()
    async with _session(url, connections=concurrency) as http:
        clients = [_client(http, workload, window, tally) for _ in range(concurrency)]
        server, *_ = await asyncio.gather(_server_figures(url, workload.model, window, server_pid), *clients)
    return LoadRun(
        concurrency, duration_s, tuple(tally.latencies_ms), tally.failures, server.mean_batch_size, server.cpu_s
    )


def run_load(
    url: str,
    workload: Workload,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    server_pid: int | None = None,
) -> LoadRun:
    """`concurrency` closed-loop clients on the server at `url` for `warmup_s` + `duration_s`;
    with `server_pid` (the server's process, on this machine) its CPU time over the window too."""
    return asyncio.run(_load(url, workload, concurrency, warmup_s, duration_s, server_pid))
