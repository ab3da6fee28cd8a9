"""The instruments of `easerve bench robustness`: the server under attack (a process we hold, so
its tree's memory can be sampled, it can be sent SIGTERM and its exit code read), the RSS
sampler, the bystander requests, aiohttp requests reduced to one outcome string, and a raw
HTTP/1.1 connection for the scenarios where the bytes on the wire (or their absence) matter.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from easerve.loadtest.server import STOP_TIMEOUT_S, RssSampler, free_port, process_tree, wait_ready

HOST = "127.0.0.1"

# Outcomes of a request that got no HTTP answer.
RESET = "reset"  # the connection closed or was reset before an answer
TIMEOUT = "timeout"  # no answer within the client's limit
REFUSED = "refused"  # no connection
TRANSPORT_OUTCOMES = (RESET, TIMEOUT, REFUSED)


def succeeded(outcome: str) -> bool:
    """Whether an outcome (an HTTP status as text, or a transport outcome) is a 2xx answer."""
    return outcome.isdigit() and 200 <= int(outcome) < 300


# --- the server ---------------------------------------------------------------------------------


class ServerStartError(RuntimeError):
    """The server exited, or was not ready in time, before the scenario began."""


@dataclass
class ServerHandle:
    url: str
    port: int
    process: subprocess.Popen
    log_path: Path
    sampler: RssSampler
    bystander: Bystander | None = None  # the scenario's bystander stream, while it runs

    @property
    def pid(self) -> int:
        return self.process.pid

    def exit_code(self) -> int | None:
        """The server's exit status once it has exited, else None."""
        return self.process.poll()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextmanager
def launched_server(
    command: list[str], log_path: Path, ready_timeout_s: float, rss_cap_mb: float
) -> Iterator[ServerHandle]:
    """`command` + `--port <free port>` (an `easerve serve` listening on 127.0.0.1), its output in
    `log_path`; yields it once ready, with its RSS sampler running, and kills its process tree on
    exit. Like `loadtest.server.running_server`, but the
    process stays ours: its pid for the sampler, its exit status, SIGTERM whenever we choose.
    ServerStartError names the log when it is not ready in time."""
    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen([*command, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
        sampler = RssSampler(process.pid, rss_cap_mb)
        try:
            url = f"http://{HOST}:{port}"
            try:
                wait_ready(url, ready_timeout_s, process)
            except RuntimeError as error:
                raise ServerStartError(f"{error}; see {log_path}") from None
            sampler.start()
            yield ServerHandle(url, port, process, log_path, sampler)
        finally:
            sampler.stop()
            # Measured by now: SIGKILL, not SIGTERM and the server's shutdown grace (seconds per
            # scenario). The shutdown scenario sends its own SIGTERM and waits for the exit.
            for pid in process_tree(process.pid):
                with suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- aiohttp requests reduced to outcomes -------------------------------------------------------


def session(url: str, connections: int, timeout_s: float) -> aiohttp.ClientSession:
    """Keep-alive connections to `url`, at most `connections` at once (0: no limit)."""
    return aiohttp.ClientSession(
        base_url=url,
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    )


def transport_outcome(error: BaseException) -> str:
    if isinstance(error, aiohttp.ClientConnectorError):
        return REFUSED
    if isinstance(error, TimeoutError):
        return TIMEOUT
    return RESET


async def send(
    http: aiohttp.ClientSession, method: str, path: str, timeout_s: float | None = None, **kwargs: Any
) -> tuple[str, float]:
    """(outcome, seconds from send to answer): outcome is the HTTP status as text, or one of
    TRANSPORT_OUTCOMES. The body is read in full before the clock stops."""
    outcome, latency, _ = await send_for_headers(http, method, path, timeout_s, **kwargs)
    return outcome, latency


async def send_for_headers(
    http: aiohttp.ClientSession, method: str, path: str, timeout_s: float | None = None, **kwargs: Any
) -> tuple[str, float, dict[str, str]]:
    """`send`, and the answer's headers (names in lower case; empty without an answer)."""
    if timeout_s is not None:
        kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout_s)
    sent = time.perf_counter()
    headers: dict[str, str] = {}
    try:
        async with http.request(method, path, **kwargs) as response:
            await response.read()
            outcome = str(response.status)
            headers = {name.lower(): value for name, value in response.headers.items()}
    except (aiohttp.ClientError, TimeoutError) as error:
        outcome = transport_outcome(error)
    return outcome, time.perf_counter() - sent, headers


@dataclass
class Tally:
    """Outcomes of a group of requests."""

    outcomes: Counter = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)

    def add(self, outcome: str, latency_s: float) -> None:
        self.outcomes[outcome] += 1
        self.latencies_s.append(latency_s)

    @property
    def sent(self) -> int:
        return sum(self.outcomes.values())

    @property
    def lost(self) -> int:
        """Answered non-2xx, or not at all."""
        return sum(count for outcome, count in self.outcomes.items() if not succeeded(outcome))

    @property
    def worst_ms(self) -> float | None:
        return max(self.latencies_s) * 1000 if self.latencies_s else None


async def closed_loop(
    http: aiohttp.ClientSession, count: int, deadline: float, tally: Tally, method: str, path: str, **kwargs: Any
) -> None:
    """One client: `count` requests one after another, none started after `deadline`
    (time.perf_counter())."""
    for _ in range(count):
        if time.perf_counter() >= deadline:
            return
        tally.add(*await send(http, method, path, **kwargs))


# --- bystanders ---------------------------------------------------------------------------------


class Bystander:
    """A small normal request started every `interval_s` on its own (none waits for another), until
    stopped or `max_count` started; each may take `timeout_s` (a timeout counts as that long)."""

    def __init__(self, url: str, png: bytes, model: str, interval_s: float, timeout_s: float, max_count: int) -> None:
        self.url, self.png, self.model = url, png, model
        self.interval_s, self.timeout_s, self.max_count = interval_s, timeout_s, max_count
        self.tally = Tally()
        self.log: list[tuple[float, str, float]] = []  # (sent at, outcome, latency s), as answered

    def between(self, start: float, end: float) -> Tally:
        """The bystanders sent from `start` to `end` (time.perf_counter())."""
        tally = Tally()
        for sent, outcome, latency in self.log:
            if start <= sent <= end:
                tally.add(outcome, latency)
        return tally

    async def _one(self, http: aiohttp.ClientSession) -> None:
        sent = time.perf_counter()
        outcome, latency = await send(
            http,
            "POST",
            "/v1/classify",
            timeout_s=self.timeout_s,
            params={"model": self.model},
            data=self.png,
            headers={"content-type": "image/png"},
        )
        latency = self.timeout_s if outcome == TIMEOUT else latency
        self.tally.add(outcome, latency)
        self.log.append((sent, outcome, latency))

    async def run(self, stop: asyncio.Event) -> None:
        async with session(self.url, connections=0, timeout_s=self.timeout_s) as http:
            started = []
            while not stop.is_set() and len(started) < self.max_count:
                started.append(asyncio.create_task(self._one(http)))
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
            await asyncio.gather(*started)


# --- raw HTTP/1.1 -------------------------------------------------------------------------------


class ConnectionClosed(Exception):
    """The server closed or reset the connection before answering."""


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    @property
    def closes(self) -> bool:
        """The server said it closes the connection after this answer."""
        return "close" in self.headers.get("connection", "").lower()


def raw_request(method: str, target: str, port: int, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    """An HTTP/1.1 request (keep-alive, Content-Length) as bytes."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {HOST}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class RawConnection:
    """One TCP connection to the server, spoken to byte by byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, timeout_s: float = 5.0) -> RawConnection:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout_s)
        return cls(reader, writer)

    async def write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError) as error:
            raise ConnectionClosed(str(error)) from None

    async def _read_response(self) -> RawResponse:
        try:
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionClosed("closed before the status line")
            status = int(status_line.split()[1])
            headers: dict[str, str] = {}
            while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if "content-length" in headers:
                body = await self.reader.readexactly(int(headers["content-length"]))
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                body = await self._chunked_body()
            else:
                body = await self.reader.read()
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as error:
            raise ConnectionClosed(str(error) or type(error).__name__) from None
        except (ValueError, IndexError):
            raise ConnectionClosed(f"not an HTTP response: {status_line[:80]!r}") from None
        return RawResponse(status, headers, body)

    async def _chunked_body(self) -> bytes:
        parts = []
        while (size := int((await self.reader.readline()).split(b";")[0].strip() or b"0", 16)) > 0:
            parts.append(await self.reader.readexactly(size))
            await self.reader.readline()
        while await self.reader.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(parts)

    async def exchange(self, request: bytes, timeout_s: float) -> RawResponse:
        """Send `request`, read its answer. ConnectionClosed, or TimeoutError after `timeout_s`."""
        await self.write(request)
        return await asyncio.wait_for(self._read_response(), timeout_s)

    async def wait_closed_by_server(self, timeout_s: float) -> tuple[bool, bytes]:
        """Read until the server closes the connection or `timeout_s` passes: (closed, what it
        sent meanwhile)."""
        received = b""
        deadline = time.perf_counter() + timeout_s
        try:
            while (left := deadline - time.perf_counter()) > 0:
                chunk = await asyncio.wait_for(self.reader.read(65536), left)
                if not chunk:
                    return True, received
                received += chunk
        except TimeoutError:
            return False, received
        except (ConnectionError, OSError):
            return True, received
        return False, received

    def close(self) -> None:
        with suppress(Exception):
            self.writer.close()
