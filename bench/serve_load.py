"""Closed-loop HTTP load on one endpoint: `concurrency` clients, each sending its next request as
soon as its last one is answered; throughput and latency over a timed window after a warm-up.

Only requests answered inside the window count (their latency is send to answer); the server's
mean batch size over the window comes from its Prometheus counters where it has them.

The clients share the machine with the server, so they must cost it little: hence aiohttp, whose
client costs far less CPU per request than httpx's (see docs/benchmarks.md#what-we-found-and-changed-on-the-way).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

REQUEST_TIMEOUT_S = 120.0
ITEMS_COUNTER = "nv_inference_count_total"
BATCHES_COUNTER = "nv_inference_exec_count_total"


@dataclass(frozen=True)
class Workload:
    """One request, sent again and again: a raw image body to `route?model=<model>`."""

    route: str
    model: str
    body: bytes
    content_type: str = "image/png"


@dataclass(frozen=True)
class LoadRun:
    concurrency: int
    window_s: float
    latencies_ms: tuple[float, ...]  # of the requests answered 200 inside the window
    failures: int  # other answers (or none) inside the window
    mean_batch_size: float | None  # None: the server reports no batch counters

    @property
    def throughput(self) -> float:
        """Requests answered 200 per second."""
        return len(self.latencies_ms) / self.window_s

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


async def _mean_batch_size(url: str, model: str, window: _Window) -> float | None:
    async with _session(url, connections=1) as http:
        await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
        before = await _batch_counters(http, model)
        await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
        after = await _batch_counters(http, model)
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def _session(url: str, connections: int) -> aiohttp.ClientSession:
    """Keep-alive connections to `url`, at most `connections` at once."""
    return aiohttp.ClientSession(
        base_url=url,
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )


async def _load(url: str, workload: Workload, concurrency: int, warmup_s: float, duration_s: float) -> LoadRun:
    start = time.perf_counter() + warmup_s
    window = _Window(start, start + duration_s)
    tally = _Tally()
    async with _session(url, connections=concurrency) as http:
        clients = [_client(http, workload, window, tally) for _ in range(concurrency)]
        mean_batch, *_ = await asyncio.gather(_mean_batch_size(url, workload.model, window), *clients)
    return LoadRun(concurrency, duration_s, tuple(tally.latencies_ms), tally.failures, mean_batch)


def run_load(url: str, workload: Workload, concurrency: int, warmup_s: float, duration_s: float) -> LoadRun:
    """`concurrency` closed-loop clients on the server at `url` for `warmup_s` + `duration_s`."""
    return asyncio.run(_load(url, workload, concurrency, warmup_s, duration_s))
