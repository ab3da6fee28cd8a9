"""Open-loop and closed-loop load over several models at once, for `easerve bench scheduling`.

Open loop: every stream (one model's endpoint, its request body, its deadline) sends at the
times of its own arrival process, whatever the server answers: Poisson (exponential gaps) or
bursty (gamma gaps with a coefficient of variation of 3, the same mean). Each request carries
`timeout=<deadline>` so the server knows it; it is *good* when answered 200 within its
deadline, measured at the client from the moment it was due to be sent. Closed loop: clients
that each send the next request as soon as the last is answered (what hides overload, kept for
the issue's 16 vs 128 clients figure).

The server's own figures for a window (batch sizes, device busy time, the scheduler's overhead,
requests refused or dropped) come from `/metrics` read at the window's start and end.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

BURSTY_CV = 3.0
PATTERNS = ("poisson", "bursty")
# A request still unanswered this long after its deadline is given up (counted not good).
GIVE_UP_AFTER_DEADLINE_S = 2.0
MAX_CONNECTIONS = 1024


@dataclass(frozen=True)
class Stream:
    """One model's requests: `url` (path and query, `timeout=` included) with a prebuilt body."""

    model: str
    url: str
    body: bytes
    content_type: str
    deadline_s: float
    share: float  # of the offered requests


@dataclass(frozen=True)
class Outcome:
    stream: int
    status: int  # 0: no answer (connection error, given up)
    latency_s: float  # from when it was due to be sent


def arrival_times(rate: float, duration_s: float, pattern: str, rng: np.random.Generator) -> np.ndarray:
    """Arrival times in [0, duration_s) of a renewal process of mean `rate` per second."""
    if rate <= 0:
        return np.empty(0)
    expected = rate * duration_s
    count = int(expected + 6 * math.sqrt(expected) * BURSTY_CV + 16)
    if pattern == "poisson":
        gaps = rng.exponential(1.0 / rate, count)
    elif pattern == "bursty":
        shape = 1.0 / BURSTY_CV**2
        gaps = rng.gamma(shape, 1.0 / (rate * shape), count)
    else:
        raise ValueError(f"unknown arrival pattern {pattern!r}; known: {', '.join(PATTERNS)}")
    times = np.cumsum(gaps) - gaps[0] * rng.random()
    return times[(times >= 0) & (times < duration_s)]


def schedule(streams: list[Stream], rate: float, duration_s: float, pattern: str, seed: int) -> list[tuple[float, int]]:
    """(time, stream index) of every request of the run, in time order."""
    rng = np.random.default_rng(seed)
    total_share = sum(stream.share for stream in streams)
    events = [
        (float(moment), index)
        for index, stream in enumerate(streams)
        for moment in arrival_times(rate * stream.share / total_share, duration_s, pattern, rng)
    ]
    return sorted(events)


async def _send(http: aiohttp.ClientSession, stream: Stream, due: float, index: int) -> Outcome:
    headers = {"content-type": stream.content_type}
    try:
        async with asyncio.timeout(stream.deadline_s + GIVE_UP_AFTER_DEADLINE_S):
            async with http.post(stream.url, data=stream.body, headers=headers) as response:
                await response.read()
                status = response.status
    except (aiohttp.ClientError, TimeoutError):
        status = 0
    return Outcome(index, status, time.perf_counter() - due)


def _session(url: str, connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        base_url=url,
        connector=aiohttp.TCPConnector(limit=connections, force_close=False),
        timeout=aiohttp.ClientTimeout(total=None),
    )


@dataclass
class ServerWindow:
    """The server's counters over a window (differences of `/metrics` read at its ends)."""

    batch_sizes: dict[str, float] = field(default_factory=dict)  # bucket upper bound -> batches
    items: float = 0.0
    batches: float = 0.0
    busy_s: float = 0.0
    decision_s: float = 0.0
    refused_at_door: float = 0.0
    dropped: float = 0.0
    failures: dict[str, float] = field(default_factory=dict)  # reason -> requests


async def read_counters(http: aiohttp.ClientSession) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with http.get("/metrics") as response:
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def server_window(before: dict, after: dict) -> ServerWindow:
    """What happened on the server between two `read_counters`."""
    window = ServerWindow()
    previous_buckets: dict[str, float] = {}
    for key, value in after.items():
        name, labels = key
        delta = value - before.get(key, 0.0)
        labels_dict = dict(labels)
        if name == "easerve_batch_size_bucket":
            bound = labels_dict["le"]
            previous_buckets[bound] = previous_buckets.get(bound, 0.0) + delta
        elif name == "nv_inference_count_total":
            window.items += delta
        elif name == "nv_inference_exec_count_total":
            window.batches += delta
        elif name == "nv_inference_request_failure_total":
            reason = labels_dict["reason"]
            window.failures[reason] = window.failures.get(reason, 0.0) + delta
        elif name == "easerve_device_busy_seconds":
            window.busy_s = delta
        elif name == "easerve_scheduler_decision_seconds":
            window.decision_s = delta
        elif name == "easerve_scheduler_refused_at_door":
            window.refused_at_door = delta
        elif name == "easerve_scheduler_dropped":
            window.dropped = delta
    window.batch_sizes = _bucket_counts(previous_buckets)
    return window


def _bucket_counts(cumulative: dict[str, float]) -> dict[str, float]:
    """Per-bucket counts ("≤1", "2", "3–4", …) from cumulative Prometheus buckets."""
    bounds = sorted((float(bound), count) for bound, count in cumulative.items())
    counts: dict[str, float] = {}
    below, lower = 0.0, 0.0
    for bound, count in bounds:
        if math.isinf(bound):
            label = f">{lower:g}"
        elif bound - lower <= 1:
            label = f"{bound:g}"
        else:
            label = f"{lower + 1:g}–{bound:g}"
        if count - below > 0:
            counts[label] = count - below
        below, lower = count, bound
    return counts


@dataclass(frozen=True)
class OpenLoopRun:
    duration_s: float
    outcomes: tuple[Outcome, ...]
    server: ServerWindow
    late_sends: int  # requests the client could not send within 5 ms of their due time


async def _open_loop(
    url: str, streams: list[Stream], events: list[tuple[float, int]], duration_s: float
) -> OpenLoopRun:
    async with _session(url, MAX_CONNECTIONS) as http:
        before = await read_counters(http)
        start = time.perf_counter() + 0.05
        tasks: list[asyncio.Task[Outcome]] = []
        late = 0
        for moment, index in events:
            due = start + moment
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.005:
                late += 1
            tasks.append(asyncio.create_task(_send(http, streams[index], due, index)))
        outcomes = await asyncio.gather(*tasks)
        after = await read_counters(http)
    return OpenLoopRun(duration_s, tuple(outcomes), server_window(before, after), late)


def open_loop(url: str, streams: list[Stream], rate: float, duration_s: float, pattern: str, seed: int) -> OpenLoopRun:
    """`streams` at `rate` requests per second in all (split by their shares) for `duration_s`."""
    events = schedule(streams, rate, duration_s, pattern, seed)
    return asyncio.run(_open_loop(url, streams, events, duration_s))


@dataclass(frozen=True)
class ClosedLoopRun:
    clients: int
    duration_s: float
    statuses: dict[int, int]
    good: int  # answered 200 within the stream's deadline

    @property
    def goodput(self) -> float:
        return self.good / self.duration_s


async def _closed_loop(url: str, streams: list[Stream], clients: int, warmup_s: float, duration_s: float, seed: int):
    rng = np.random.default_rng(seed)
    shares = np.array([stream.share for stream in streams], float)
    shares /= shares.sum()
    start = time.perf_counter() + warmup_s
    end = start + duration_s
    statuses: Counter[int] = Counter()
    good = 0

    async def client(http: aiohttp.ClientSession, picks: np.ndarray) -> None:
        nonlocal good
        turn = 0
        while time.perf_counter() < end:
            index = int(picks[turn % len(picks)])
            turn += 1
            sent = time.perf_counter()
            outcome = await _send(http, streams[index], sent, index)
            if start <= time.perf_counter() < end:
                statuses[outcome.status] += 1
                good += outcome.status == 200 and outcome.latency_s <= streams[index].deadline_s

    async with _session(url, clients) as http:
        await asyncio.gather(*(client(http, rng.choice(len(streams), 1024, p=shares)) for _ in range(clients)))
    return ClosedLoopRun(clients, duration_s, dict(statuses), good)


def closed_loop(
    url: str, streams: list[Stream], clients: int, warmup_s: float, duration_s: float, seed: int = 0
) -> ClosedLoopRun:
    """`clients` closed-loop clients, each picking its next stream by the streams' shares."""
    return asyncio.run(_closed_loop(url, streams, clients, warmup_s, duration_s, seed))
