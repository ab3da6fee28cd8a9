"""Closed-loop HTTP load on one endpoint: `concurrency` clients, each sending its next request as
soon as its last one is answered; throughput and latency over a timed window after a warm-up.

Only requests answered inside the window count (their latency is send to answer); the server's
mean batch size over the window comes from its Prometheus counters where it has them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
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


async def _client(http: httpx.AsyncClient, workload: Workload, window: _Window, tally: _Tally) -> None:
    headers = {"content-type": workload.content_type}
    while time.perf_counter() < window.end:
        sent = time.perf_counter()
        try:
            response = await http.post(workload.route, params={"model": workload.model}, content=workload.body,
                                       headers=headers)
            succeeded = response.status_code == 200
        except httpx.HTTPError:
            succeeded = False
        answered = time.perf_counter()
        if not window.holds(answered):
            continue
        if succeeded:
            tally.latencies_ms.append((answered - sent) * 1000)
        else:
            tally.failures += 1


async def _batch_counters(http: httpx.AsyncClient, model: str) -> tuple[float, float] | None:
    """(items inferred, batches executed) so far for `model`; None without a /metrics."""
    response = await http.get("/metrics")
    if response.status_code != 200:
        return None
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.labels.get("model") == model
    }
    return values.get(ITEMS_COUNTER, 0.0), values.get(BATCHES_COUNTER, 0.0)


async def _mean_batch_size(url: str, model: str, window: _Window) -> float | None:
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as http:
        await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
        before = await _batch_counters(http, model)
        await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
        after = await _batch_counters(http, model)
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


async def _load(url: str, workload: Workload, concurrency: int, warmup_s: float, duration_s: float) -> LoadRun:
    start = time.perf_counter() + warmup_s
    window = _Window(start, start + duration_s)
    tally = _Tally()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
        clients = [_client(http, workload, window, tally) for _ in range(concurrency)]
        mean_batch, *_ = await asyncio.gather(_mean_batch_size(url, workload.model, window), *clients)
    return LoadRun(concurrency, duration_s, tuple(tally.latencies_ms), tally.failures, mean_batch)


def run_load(url: str, workload: Workload, concurrency: int, warmup_s: float, duration_s: float) -> LoadRun:
    """`concurrency` closed-loop clients on the server at `url` for `warmup_s` + `duration_s`."""
    return asyncio.run(_load(url, workload, concurrency, warmup_s, duration_s))
