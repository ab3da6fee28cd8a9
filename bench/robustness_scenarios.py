"""The attack scenarios of `easerve bench robustness`, each against a fresh `easerve serve`.

Every scenario but shutdown runs under `run_attack`: the server is started, a bystander request
is sent every 0.5 s while the attack runs, then the server idles and its memory is read again.
The attack fills in its `ScenarioResult` as it goes, so what was measured before a failure (the
server died, the scenario ran out of time) is still reported. Shutdown starts a fresh server per
run and sends it SIGTERM in the middle of closed-loop load.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import signal
import struct
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np

from easerve.bench.robustness_probes import (
    HOST,
    REFUSED,
    RESET,
    TIMEOUT,
    TRANSPORT_OUTCOMES,
    Bystander,
    ConnectionClosed,
    RawConnection,
    ServerHandle,
    ServerStartError,
    Tally,
    closed_loop,
    launched_server,
    raw_request,
    send,
    send_for_headers,
    session,
    succeeded,
)
from easerve.bench.robustness_report import ScenarioResult, ShutdownRun, format_statuses
from easerve.loadtest.samples import load_samples, resized_png
from easerve.loadtest.server import MB
from easerve.service.settings import Settings

CLASSIFIER = "eamlp-ea-tiny"  # also the bystanders' model
SEGMENTER = "eanet-ea-tiny"
DETECTOR = "eadet-ea-tiny"
GENERATOR = "eagan-ea-tiny"
CLOUD_CLASSIFIER = "pct-ea-tiny"
CLOUD_CLASSIFIER_SA = "pct-sa-tiny"
SEGMENTER_SA = "eanet-sa-tiny"
MODELS = (CLASSIFIER, SEGMENTER, DETECTOR, GENERATOR, CLOUD_CLASSIFIER, CLOUD_CLASSIFIER_SA, SEGMENTER_SA)

PNG = {"content-type": "image/png"}
OCTET_STREAM = {"content-type": "application/octet-stream"}
V2_HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class Counts:
    """How much of each attack: the issue's figures (FULL), or a few requests each (QUICK)."""

    # batch-poisoning: valid /v1/generate clients x requests, v2 label-99 clients x requests; for
    # each other poisoned model, valid v1 clients x requests and one poisoning client's requests.
    generate_clients: int = 16
    generate_requests: int = 20
    poison_clients: int = 2
    poison_requests: int = 20
    companion_clients: int = 2
    companion_requests: int = 10
    companion_poison_requests: int = 10
    # heavy-images: concurrent requests of `heavy_images` all-black side x side PNGs.
    heavy_concurrency: int = 4
    heavy_images: int = 16
    heavy_side: int = 5000
    # v2-huge-tensor: points of the one pct-sa-tiny cloud.
    huge_points: int = 32768
    # deadline: heavy requests and closed-loop 512x512 /v1/segment clients as background work,
    # then `deadline_probes` classify requests with ?timeout=deadline_s, one a second.
    deadline_heavy: int = 2
    deadline_load_clients: int = 8
    deadline_probes: int = 3
    deadline_s: float = 2.0
    deadline_margin_s: float = 0.5
    deadline_lead_s: float = 1.0
    # slow-connections
    slowloris: int = 50
    idle_connections: int = 50
    slow_window_s: float = 15.0
    healthz_interval_s: float = 0.5
    # shutdown: closed-loop keep-alive clients, runs, SIGTERM after, longest wait for the exit.
    shutdown_clients: int = 64
    shutdown_runs: int = 3
    sigterm_after_s: float = 2.0
    exit_bound_s: float = 45.0
    shutdown_requests_per_client: int = 2000
    # sa-memory: concurrent v2 requests of [1, memory_points, 3] to each point-cloud twin (binary
    # and JSON in turn), concurrent binary [1, 3, side, side] requests to each segmentation twin,
    # and how long each twin's memory may take to come back.
    memory_cloud_clients: int = 16
    memory_points: int = 8192
    memory_image_clients: int = 4
    memory_image_side: int = 1024
    give_back_s: float = 10.0
    # chunk-floods: requests of each large flood (PNG chunks, JPEG COM markers) and their size,
    # requests of the small PNG flood (inspected where small bodies are) and its size, then
    # 64x64 classify bystanders with ?timeout=flood_bystander_deadline_s, one every interval.
    flood_requests: int = 4
    flood_bytes: int = 30_000_000
    small_flood_requests: int = 16
    small_flood_bytes: int = 255_000
    flood_bystanders: int = 140
    flood_bystander_interval_s: float = 0.1
    flood_bystander_deadline_s: float = 2.0
    # loop-stalls: clients each sending requests of `stall_images` PNGs padded with
    # `stall_chunks` empty chunks each (under the per-image cap, a body under the size parsed
    # where small bodies are), one after another, while /healthz is probed every interval.
    stall_clients: int = 16
    stall_requests: int = 8
    stall_images: int = 12
    stall_chunks: int = 1000
    stall_probe_interval_s: float = 0.05
    stall_probe_p99_ms: float = 250.0
    # client-leaves: clients that upload a request queued behind a running batch and then close
    # their connection after leave_after_s; clients that send the same request and wait.
    leavers: int = 4
    leave_after_s: float = 0.3
    stayers: int = 2
    # slow-body: connections sending a body one byte per interval; the server's --body-timeout
    # for this scenario (None: its default).
    slow_bodies: int = 4
    slow_body_interval_s: float = 0.5
    slow_body_timeout_s: float | None = None
    # every scenario
    idle_after_s: float = 5.0
    bystander_interval_s: float = 0.5
    bystander_timeout_s: float = 30.0
    request_timeout_s: float = 60.0
    scenario_timeout_s: float = 120.0


FULL = Counts()
QUICK = replace(
    FULL,
    generate_clients=4,
    generate_requests=3,
    poison_clients=1,
    poison_requests=3,
    companion_clients=1,
    companion_requests=2,
    companion_poison_requests=2,
    heavy_concurrency=1,
    heavy_images=2,
    huge_points=8193,
    deadline_heavy=1,
    deadline_load_clients=2,
    deadline_probes=1,
    slowloris=5,
    idle_connections=5,
    slow_window_s=3.0,
    shutdown_clients=8,
    shutdown_runs=1,
    sigterm_after_s=1.0,
    exit_bound_s=20.0,
    memory_cloud_clients=4,
    memory_image_clients=1,
    memory_image_side=512,
    flood_requests=1,
    flood_bytes=3_000_000,
    small_flood_requests=4,
    flood_bystanders=20,
    stall_clients=4,
    stall_requests=2,
    leavers=2,
    stayers=1,
    slow_bodies=2,
    slow_body_timeout_s=2.0,
    idle_after_s=1.0,
    bystander_timeout_s=10.0,
    request_timeout_s=20.0,
    scenario_timeout_s=45.0,
)


@dataclass(frozen=True)
class Env:
    """What every scenario needs: how to start the server, where its logs go, the counts."""

    command: list[str]  # `easerve serve ...` without --port
    log_dir: Path
    ready_timeout_s: float
    rss_cap_mb: float  # 0: no cap
    counts: Counts
    user_args: tuple[str, ...] = ()  # the --serve-arg flags, the end of `command`
    weights_dirs: tuple[Path, ...] = ()  # where the manifests are (for their memory models)

    def launch(self, name: str, scenario_args: tuple[str, ...] = ()):
        """A fresh server; `scenario_args` go before the user's flags (so those still win)."""
        command = self.command
        if scenario_args:
            head = command[: len(command) - len(self.user_args)]
            command = [*head, *scenario_args, *self.user_args]
        return launched_server(command, self.log_dir / f"{name}.log", self.ready_timeout_s, self.rss_cap_mb)


# --- payloads -----------------------------------------------------------------------------------


@cache
def black_png(side: int) -> bytes:
    """An all-black side x side greyscale PNG (5000: 24 KB that decode to 75 MB of RGB)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(files: list[bytes], content_type: str = "image/png") -> tuple[bytes, str]:
    """A multipart/form-data body with one `files` part per file: (body, content type)."""
    boundary = "easerve-robustness-boundary"
    parts = []
    for index, data in enumerate(files):
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="image{index}.png"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def v2_input(name: str, shape: list[int], datatype: str, data: list) -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def v2_binary(name: str, shape: list[int], datatype: str, blob: bytes) -> tuple[bytes, dict[str, str]]:
    """A v2 request in the binary tensor extension: (body, headers)."""
    header = json.dumps(
        {
            "inputs": [
                {"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": len(blob)}}
            ]
        }
    ).encode()
    return header + blob, {**OCTET_STREAM, V2_HEADER_LENGTH: str(len(header))}


def ply_repeated_property() -> bytes:
    """A binary PLY whose vertex element names `x` twice (x, y, z, x): 4 vertices."""
    header = (
        "ply\nformat binary_little_endian 1.0\nelement vertex 4\n"
        "property float x\nproperty float y\nproperty float z\nproperty float x\nend_header\n"
    )
    return header.encode() + np.zeros((4, 4), np.float32).tobytes()


def npy_huge_shape() -> bytes:
    """A 152-byte .npy (v1.0): a 128-byte header claiming float32 shape (10**10, 3), then 24
    bytes of data (two points)."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (10000000000, 3), }"
    header = header.ljust(128 - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(24)


# Poisoned v2 requests: model -> (what, inputs).
POISONS: dict[str, tuple[str, list[dict]]] = {
    GENERATOR: (
        "eagan label=99",
        [v2_input("z", [1, 64], "FP32", [0.0] * 64), v2_input("label", [1], "INT64", [99])],
    ),
    SEGMENTER: ("eanet H=0", [v2_input("image", [1, 3, 0, 64], "FP32", [])]),
    CLOUD_CLASSIFIER: ("pct points [1,0,3]", [v2_input("points", [1, 0, 3], "FP32", [])]),
    DETECTOR: ("eadet [1,3,1,1]", [v2_input("image", [1, 3, 1, 1], "FP32", [0.0, 0.0, 0.0])]),
}


def _valid_requests() -> dict[str, tuple[str, dict]]:
    """Model -> (route, request keywords) of a valid v1 request to it."""
    samples = load_samples()
    scene = samples.scenes[0].png
    return {
        SEGMENTER: ("/v1/segment", {"params": {"model": SEGMENTER}, "data": scene, "headers": PNG}),
        DETECTOR: ("/v1/detect", {"params": {"model": DETECTOR}, "data": scene, "headers": PNG}),
        CLOUD_CLASSIFIER: (
            "/v1/pointcloud/classify",
            {"params": {"model": CLOUD_CLASSIFIER}, "data": samples.clouds[0].npy, "headers": OCTET_STREAM},
        ),
    }


def small_png() -> bytes:
    """The bystanders' image: a 64x64 shape from the load test's samples."""
    return load_samples().images[0].png


async def classify(
    http, body: bytes, content_type: str = "image/png", timeout_s: float | None = None, **params: str
) -> tuple[str, float]:
    """`send` of `body` to `/v1/classify` on the bystanders' model (`params` added to the query)."""
    query = {"model": CLASSIFIER, **params}
    return await send(
        http, "POST", "/v1/classify", timeout_s, params=query, data=body, headers={"content-type": content_type}
    )


# --- the frame of an attack scenario ------------------------------------------------------------

Attack = Callable[[ServerHandle, Env, ScenarioResult], Awaitable[None]]


def add_valid(result: ScenarioResult, tally: Tally) -> None:
    result.valid_sent += tally.sent
    result.valid_lost += tally.lost


def _is_4xx(outcome: str) -> bool:
    return outcome.isdigit() and 400 <= int(outcome) < 500


async def _attack_with_bystanders(server: ServerHandle, env: Env, attack: Attack, result: ScenarioResult) -> Tally:
    counts = env.counts
    bystander = Bystander(
        server.url,
        small_png(),
        CLASSIFIER,
        counts.bystander_interval_s,
        counts.bystander_timeout_s,
        max_count=int(counts.scenario_timeout_s / counts.bystander_interval_s) + 1,
    )
    stop = asyncio.Event()
    server.bystander = bystander
    watching = asyncio.create_task(bystander.run(stop))
    try:
        await asyncio.wait_for(attack(server, env, result), counts.scenario_timeout_s)
    except TimeoutError:
        result.outcome = f"did not finish within {counts.scenario_timeout_s:.0f} s"
    except Exception as error:  # noqa: BLE001 - reported; a dead server is told apart afterwards
        result.outcome = f"attack failed: {type(error).__name__}: {error}"
    finally:
        stop.set()
        await watching
    return bystander.tally


def _server_fate(server: ServerHandle, result: ScenarioResult, cap_mb: float) -> None:
    """Marks the result not completed when the server died (or was killed at the RSS cap)."""
    if server.sampler.killed_at_mb is not None:
        result.outcome = (
            f"server killed by the bench: RSS {server.sampler.killed_at_mb:,.0f} MB over the {cap_mb:,.0f} MB cap"
        )
    elif (code := server.exit_code()) is not None:
        result.outcome = f"server died during the scenario (exit code {code})"
    else:
        return
    result.server_log_tail = server.log_tail()


def _idle_return(server: ServerHandle, seconds: float) -> float | None:
    """The server tree's RSS after `seconds` without traffic (MB); None if it is gone."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end and server.exit_code() is None:
        time.sleep(0.1)
    return None if server.exit_code() is not None else server.sampler.current_mb()


def run_attack(
    name: str,
    description: str,
    env: Env,
    attack: Attack,
    judge: Callable[[ScenarioResult], bool],
    scenario_args: tuple[str, ...] = (),
) -> ScenarioResult:
    """One attack scenario against a fresh server (started with `scenario_args` too); never raises."""
    result = ScenarioResult(name, description)
    started = time.perf_counter()
    try:
        with env.launch(name, scenario_args) as server:
            result.rss_before_mb = server.sampler.current_mb()
            bystanders = asyncio.run(_attack_with_bystanders(server, env, attack, result))
            result.bystander_sent, result.bystander_lost = bystanders.sent, bystanders.lost
            result.worst_bystander_ms = bystanders.worst_ms
            add_valid(result, bystanders)
            result.details["bystanders"] = dict(bystanders.outcomes)
            result.rss_after_mb = _idle_return(server, env.counts.idle_after_s)
            result.peak_rss_mb = server.sampler.peak_mb
            _server_fate(server, result, env.rss_cap_mb)
            result.target_met = judge(result) and result.completed
    except ServerStartError as error:
        result.outcome = f"could not start the server: {error}"
    except Exception as error:  # noqa: BLE001 - a scenario that breaks is reported, not raised
        result.outcome = f"bench error: {type(error).__name__}: {error}"
    result.duration_s = time.perf_counter() - started
    return result


# --- 1. batch-poisoning -------------------------------------------------------------------------


async def _batch_poisoning(server: ServerHandle, env: Env, result: ScenarioResult) -> None:
    counts = env.counts
    deadline = time.perf_counter() + counts.scenario_timeout_s
    valid = {"generate": Tally(), **{model: Tally() for model in _valid_requests()}}
    poisoned = {what: Tally() for what, _ in POISONS.values()}
    async with session(server.url, connections=0, timeout_s=counts.request_timeout_s) as http:
        jobs = [
            closed_loop(
                http,
                counts.generate_requests,
                deadline,
                valid["generate"],
                "POST",
                "/v1/generate",
                params={"model": GENERATOR},
                json={"label": 1},
            )
            for _ in range(counts.generate_clients)
        ]
        for model, (route, request) in _valid_requests().items():
            jobs += [
                closed_loop(http, counts.companion_requests, deadline, valid[model], "POST", route, **request)
                for _ in range(counts.companion_clients)
            ]
        for model, (what, inputs) in POISONS.items():
            clients, requests = (
                (counts.poison_clients, counts.poison_requests)
                if model == GENERATOR
                else (1, counts.companion_poison_requests)
            )
            path = f"/v2/models/{model}/infer"
            jobs += [
                closed_loop(http, requests, deadline, poisoned[what], "POST", path, json={"inputs": inputs})
                for _ in range(clients)
            ]
        try:
            await asyncio.gather(*jobs)
        finally:
            for tally in valid.values():
                add_valid(result, tally)
            result.attack_statuses = dict(sum((tally.outcomes for tally in poisoned.values()), Counter()))
            result.details["valid"] = {name: dict(tally.outcomes) for name, tally in valid.items()}
            result.details["poisoned"] = {what: dict(tally.outcomes) for what, tally in poisoned.items()}
            result.findings = [
                "valid lost: " + ", ".join(f"{name} {tally.lost}/{tally.sent}" for name, tally in valid.items()),
                "poisoned: " + ", ".join(f"{what} {format_statuses(t.outcomes)}" for what, t in poisoned.items()),
            ]


def _judge_batch_poisoning(result: ScenarioResult) -> bool:
    return result.valid_lost == 0 and all(_is_4xx(outcome) for outcome in result.attack_statuses)


# --- 2. heavy-images ----------------------------------------------------------------------------


async def _heavy_images(server: ServerHandle, env: Env, result: ScenarioResult) -> None:
    counts = env.counts
    body, content_type = multipart([black_png(counts.heavy_side)] * counts.heavy_images)
    statuses: Counter = Counter()
    result.details["body_bytes"] = len(body)
    async with session(server.url, connections=0, timeout_s=counts.request_timeout_s) as http:
        for route, model in (("classify", CLASSIFIER), ("segment", SEGMENTER)):
            answers = await asyncio.gather(
                *(
                    send(
                        http,
                        "POST",
                        f"/v1/{route}",
                        params={"model": model},
                        data=body,
                        headers={"content-type": content_type},
                    )
                    for _ in range(counts.heavy_concurrency)
                )
            )
            for outcome, _ in answers:
                statuses[f"{route} {outcome}"] += 1
            result.attack_statuses = dict(statuses)
            result.details[route] = {
                "statuses": dict(Counter(outcome for outcome, _ in answers)),
                "latencies_s": [round(latency, 3) for _, latency in answers],
            }
            slowest = max(latency for _, latency in answers)
            result.findings.append(
                f"{route}: {format_statuses(Counter(o for o, _ in answers))}, slowest answer {slowest:.1f} s"
            )


# The server's default budget of work in flight (the bench's servers run with the defaults
# unless --serve-arg changes them), and how close to its starting RSS the server must return.
HEAVY_BUDGET_MB = Settings().server_memory_mb
IDLE_RETURN_MB = 150.0


def _judge_heavy_images(result: ScenarioResult) -> bool:
    """Each heavy request admitted within the budgets (200), refused as too large (413) or for
    now (503); memory bounded by the budget and given back; no bystander lost."""
    clean = all(key.rsplit(" ", 1)[-1] in ("200", "413", "503") for key in result.attack_statuses)
    before, peak, after = result.rss_before_mb, result.peak_rss_mb, result.rss_after_mb
    bounded = (
        None not in (before, peak, after) and peak - before <= HEAVY_BUDGET_MB and after - before <= IDLE_RETURN_MB
    )
    return result.valid_lost == 0 and clean and bounded


# --- 3. v2-huge-tensor --------------------------------------------------------------------------


async def _v2_huge_tensor(server: ServerHandle, env: Env, result: ScenarioResult) -> None:
    points = env.counts.huge_points
    cloud = np.random.default_rng(0).standard_normal((1, points, 3), dtype=np.float32)
    body, headers = v2_binary("points", [1, points, 3], "FP32", cloud.tobytes())
    async with session(server.url, connections=1, timeout_s=env.counts.request_timeout_s) as http:
        outcome, latency = await send(
            http, "POST", f"/v2/models/{CLOUD_CLASSIFIER_SA}/infer", data=body, headers=headers
        )
    result.attack_statuses = {outcome: 1}
    result.details.update(points=points, status=outcome, latency_s=round(latency, 3), body_bytes=len(body))
    result.findings.append(f"{CLOUD_CLASSIFIER_SA} [1, {points}, 3]: {outcome} after {latency:.2f} s")


def _judge_v2_huge_tensor(result: ScenarioResult) -> bool:
    return result.valid_lost == 0 and all(_is_4xx(outcome) for outcome in result.attack_statuses)


# --- 4. deadline --------------------------------------------------------------------------------


async def _deadline(server: ServerHandle, env: Env, result: ScenarioResult) -> None:
    counts = env.counts
    heavy_body, heavy_type = multipart([black_png(counts.heavy_side)] * counts.heavy_images)
    scene = resized_png(load_samples().scenes[0].png, 512)
    load, probes, heavy = Tally(), Tally(), Tally()
    stop = asyncio.Event()
    end = time.perf_counter() + counts.scenario_timeout_s

    async def load_client(http) -> None:
        for _ in range(1000):
            if stop.is_set() or time.perf_counter() >= end:
                return
            load.add(*await send(http, "POST", "/v1/segment", params={"model": SEGMENTER}, data=scene, headers=PNG))

    limit_s = counts.deadline_s + counts.deadline_margin_s
    async with (
        session(server.url, connections=0, timeout_s=counts.request_timeout_s) as http,
        session(server.url, connections=1, timeout_s=30.0) as probe_http,
    ):
        heavy_tasks = [
            asyncio.create_task(classify(http, heavy_body, heavy_type)) for _ in range(counts.deadline_heavy)
        ]
        loaders = [asyncio.create_task(load_client(http)) for _ in range(counts.deadline_load_clients)]
        try:
            await asyncio.sleep(counts.deadline_lead_s)
            for index in range(counts.deadline_probes):
                if index:
                    await asyncio.sleep(1.0)
                outcome, latency = await classify(probe_http, small_png(), timeout=f"{counts.deadline_s:g}")
                probes.add(outcome, latency)
                result.attack_statuses = dict(probes.outcomes)
                result.findings.append(
                    f"?timeout={counts.deadline_s:g} request: {outcome} after {latency:.2f} s "
                    f"({'within' if latency <= limit_s else 'PAST'} {limit_s:g} s)"
                )
        finally:
            stop.set()
            await asyncio.gather(*loaders, return_exceptions=True)
            for outcome, latency in await asyncio.gather(*heavy_tasks):
                heavy.add(outcome, latency)
            add_valid(result, load)
            result.details.update(
                probe_latencies_s=[round(latency, 3) for latency in probes.latencies_s],
                probe_statuses=dict(probes.outcomes),
                limit_s=limit_s,
                heavy_statuses=dict(heavy.outcomes),
                load_statuses=dict(load.outcomes),
            )
            result.findings.append(
                f"background: heavy classify {format_statuses(heavy.outcomes)}, "
                f"512x512 segment {load.lost}/{load.sent} lost"
            )


def _judge_deadline(result: ScenarioResult) -> bool:
    latencies = result.details.get("probe_latencies_s", [])
    statuses = result.details.get("probe_statuses", {})
    return (
        bool(latencies)
        and max(latencies) <= result.details["limit_s"]
        and all(outcome not in TRANSPORT_OUTCOMES for outcome in statuses)
    )


# --- 5. slow-connections ------------------------------------------------------------------------


def _answer_status(received: bytes) -> str | None:
    if received.startswith(b"HTTP/1."):
        parts = received.split(maxsplit=2)
        if len(parts) >= 2 and parts[1].isdigit():
            return parts[1].decode()
    return None


async def _slow_connections(server: ServerHandle, env: Env, result: ScenarioResult) -> None:
    counts = env.counts
    started = time.perf_counter()
    window_end = started + counts.slow_window_s
    partial = (
        f"POST /v1/classify?model={CLASSIFIER} HTTP/1.1\r\nHost: {HOST}:{server.port}\r\nContent-Type: image/png\r\n"
    ).encode()

    async def hold(first_bytes: bytes) -> tuple[str, float | None]:
        """(what became of the connection, seconds from its opening to the server closing it)."""
        try:
            connection = await RawConnection.open(server.port)
        except (OSError, TimeoutError):
            return REFUSED, None
        opened = time.perf_counter()
        try:
            if first_bytes:
                await connection.write(first_bytes)
            closed, received = await connection.wait_closed_by_server(window_end - time.perf_counter())
        except ConnectionClosed:
            closed, received = True, b""
        finally:
            connection.close()
        status = _answer_status(received)
        if not closed:
            return (f"{status} kept open" if status else "open"), None
        return (status or "closed, no answer"), time.perf_counter() - opened

    healthz = Tally()

    async def probe_health() -> None:
        while time.perf_counter() < window_end:
            sent = time.perf_counter()
            try:
                connection = await RawConnection.open(server.port, timeout_s=2.0)
                try:
                    answer = await connection.exchange(raw_request("GET", "/healthz", server.port), 2.0)
                    outcome = str(answer.status)
                finally:
                    connection.close()
            except ConnectionClosed:
                outcome = RESET
            except TimeoutError:
                outcome = TIMEOUT
            except OSError:
                outcome = REFUSED
            healthz.add(outcome, time.perf_counter() - sent)
            await asyncio.sleep(max(0.0, counts.healthz_interval_s - (time.perf_counter() - sent)))

    slow = [hold(partial) for _ in range(counts.slowloris)]
    idle = [hold(b"") for _ in range(counts.idle_connections)]
    try:
        *held, _ = await asyncio.gather(*slow, *idle, probe_health())
    finally:
        add_valid(result, healthz)
    statuses: Counter = Counter()
    closed_after: dict[str, list[float]] = {"slow": [], "idle": []}
    for index, (what, seconds) in enumerate(held):
        kind = "slow" if index < counts.slowloris else "idle"
        statuses[f"{kind} {what}"] += 1
        if seconds is not None:
            closed_after[kind].append(round(seconds, 2))
    result.attack_statuses = dict(statuses)
    result.details.update(
        slowloris=counts.slowloris,
        idle=counts.idle_connections,
        window_s=counts.slow_window_s,
        closed_after_s=closed_after,
        healthz=dict(healthz.outcomes),
        worst_healthz_ms=healthz.worst_ms,
    )
    for kind, total in (("slow", counts.slowloris), ("idle", counts.idle_connections)):
        times = closed_after[kind]
        span = f" after {min(times):.1f}-{max(times):.1f} s" if times else ""
        result.findings.append(
            f"{kind}: {len(times)}/{total} closed by the server within {counts.slow_window_s:g} s{span}"
        )
    result.findings.append(f"/healthz: {healthz.sent - healthz.lost}/{healthz.sent} answered 2xx")


def _judge_slow_connections(result: ScenarioResult) -> bool:
    details = result.details
    return (
        result.valid_lost == 0
        and result.attack_statuses.get("slow 408", 0) == details.get("slowloris")
        and len(details.get("closed_after_s", {}).get("idle", [])) == details.get("idle")
    )


# --- 6. malformed-500s --------------------------------------------------------------------------


def _malformed_cases() -> list[tuple[str, str, dict[str, str], bytes]]:
    """(short name, target, headers, body) of each malformed request."""
    # Shapes whose element count overflows int64 (it wraps to 0, which 0 values then "fill"):
    # 2**62 x 4 x 3 = 3 * 2**64 in the batch dimension, and 1 x 3 x 2**32 x 2**32 at batch 1.
    batch_overflow = json.dumps({"inputs": [v2_input("points", [2**62, 4, 3], "FP32", [])]}).encode()
    image_overflow = [1, 3, 2**32, 2**32]
    image_json = json.dumps({"inputs": [v2_input("image", image_overflow, "FP32", [])]}).encode()
    image_binary, binary_headers = v2_binary("image", image_overflow, "FP32", b"")
    cloud_route = f"/v1/pointcloud/classify?model={CLOUD_CLASSIFIER}"
    cloud_v2 = f"/v2/models/{CLOUD_CLASSIFIER}/infer"
    json_type = {"content-type": "application/json"}
    cloud = np.random.default_rng(0).random((1, 64, 3), np.float32)
    cloud_blob, cloud_headers = v2_binary("points", [1, 64, 3], "FP32", cloud.tobytes())
    # A header length in a digit that is not ASCII: str.isdigit() says yes, int() says no.
    odd_digit = {**cloud_headers, V2_HEADER_LENGTH: "\u00b2"}
    huge_values = json.dumps({"inputs": [v2_input("points", [1, 64, 3], "FP32", [3e38] * 192)]}).encode()
    forever = {
        "inputs": [v2_input("points", [1, 64, 3], "FP32", cloud.ravel().tolist())],
        "parameters": {"timeout": 1e15},
    }
    boundary = "easerve-robustness-boundary"
    broken_multipart = f'--{boundary}\r\nContent-Disposition: form-data; name="files"\r\n\r\nno end'.encode()
    return [
        ("ply", cloud_route, OCTET_STREAM, ply_repeated_property()),
        ("npy", cloud_route, OCTET_STREAM, npy_huge_shape()),
        ("v2-overflow-batch", cloud_v2, json_type, batch_overflow),
        ("v2-overflow-hw", f"/v2/models/{SEGMENTER}/infer", json_type, image_json),
        ("v2-overflow-hw-bin", f"/v2/models/{SEGMENTER}/infer", binary_headers, image_binary),
        ("v2-header-length-digit", cloud_v2, odd_digit, cloud_blob),
        ("v2-values-3e38", cloud_v2, json_type, huge_values),
        ("v2-timeout-forever", cloud_v2, json_type, json.dumps(forever).encode()),
        ("cloud-json-truncated", cloud_route, json_type, b'{"points": [[1, 2,'),
        (
            "multipart-truncated",
            f"/v1/classify?model={CLASSIFIER}",
            {"content-type": f"multipart/form-data; boundary={boundary}"},
            broken_multipart,
        ),
    ]


async def _exchange_outcome(connection: RawConnection, request: bytes, timeout_s: float) -> tuple[str, bool, str]:
    """(status or transport outcome, whether the server announced it closes the connection, the
    start of its answer)."""
    try:
        answer = await connection.exchange(request, timeout_s)
    except ConnectionClosed:
        return RESET, True, ""
    except TimeoutError:
        return TIMEOUT, True, ""
    return str(answer.status), answer.closes, answer.body[:200].decode("utf-8", errors="replace")


async def _malformed(server: ServerHandle, env: Env, result: ScenarioResult) -> None:
    timeout_s = env.counts.request_timeout_s
    follow_ups = Tally()
    valid = raw_request("POST", f"/v1/classify?model={CLASSIFIER}", server.port, PNG, small_png())
    statuses: dict[str, int] = {}
    cases: dict[str, dict[str, str]] = {}
    try:
        for name, target, headers, body in _malformed_cases():
            connection = await RawConnection.open(server.port)
            try:
                request = raw_request("POST", target, server.port, headers, body)
                outcome, closes, answer = await _exchange_outcome(connection, request, timeout_s)
                if outcome in TRANSPORT_OUTCOMES:
                    follow_up = "not sent: connection gone"
                elif closes:
                    follow_up = "not sent: the server announced Connection: close"
                else:
                    sent = time.perf_counter()
                    follow_up, _, _ = await _exchange_outcome(connection, valid, timeout_s)
                    follow_ups.add(follow_up, time.perf_counter() - sent)
            finally:
                connection.close()
            statuses[f"{name} {outcome}"] = statuses.get(f"{name} {outcome}", 0) + 1
            result.attack_statuses = dict(statuses)
            cases[name] = {"status": outcome, "answer": answer, "next request on the connection": follow_up}
            result.findings.append(f"{name}: {outcome}, next request on the connection: {follow_up}")
    finally:
        add_valid(result, follow_ups)
        result.details["cases"] = cases


def _judge_malformed(result: ScenarioResult) -> bool:
    cases = result.details.get("cases", {})
    announced = "not sent: the server announced"
    return (
        result.valid_lost == 0
        and bool(cases)
        and all(
            _is_4xx(case["status"])
            and (
                succeeded(case["next request on the connection"])
                or case["next request on the connection"].startswith(announced)
            )
            for case in cases.values()
        )
    )


# --- 7. shutdown --------------------------------------------------------------------------------


async def _shutdown_run(server: ServerHandle, counts: Counts, run: ShutdownRun) -> None:
    answered: Counter = Counter()
    after: Counter = Counter()
    sigterm_at: float | None = None
    exited = asyncio.Event()
    png = small_png()

    async def client(http) -> None:
        for _ in range(counts.shutdown_requests_per_client):
            if exited.is_set():
                return
            started = time.perf_counter()
            outcome, _ = await classify(http, png)
            run.sent += 1
            if outcome == REFUSED:
                run.refused += 1
                if sigterm_at is not None:  # turned away by a stopping server: this client is done
                    if run.first_refusal_after_sigterm_s is None:
                        run.first_refusal_after_sigterm_s = round(time.perf_counter() - sigterm_at, 3)
                    return
                await asyncio.sleep(0.1)
            elif outcome in (RESET, TIMEOUT):
                run.lost += 1
            else:
                answered[outcome] += 1
                if sigterm_at is not None and started >= sigterm_at:
                    after[outcome] += 1

    async def terminate() -> None:
        nonlocal sigterm_at
        try:
            await asyncio.sleep(counts.sigterm_after_s)
            if server.exit_code() is not None:
                run.error = f"the server exited (code {server.exit_code()}) before SIGTERM"
                return
            sigterm_at = time.perf_counter()
            server.process.send_signal(signal.SIGTERM)
            while time.perf_counter() - sigterm_at < counts.exit_bound_s:
                if server.exit_code() is not None:
                    run.exit_code = server.exit_code()
                    run.sigterm_to_exit_s = round(time.perf_counter() - sigterm_at, 3)
                    return
                await asyncio.sleep(0.02)
            run.error = f"still running {counts.exit_bound_s:g} s after SIGTERM: killed"
            server.process.kill()
        finally:
            exited.set()

    async with session(server.url, connections=counts.shutdown_clients, timeout_s=counts.request_timeout_s) as http:
        await asyncio.gather(terminate(), *(client(http) for _ in range(counts.shutdown_clients)))
    run.answered = dict(answered)
    run.answered_after_sigterm = dict(after)


def run_shutdown(name: str, description: str, env: Env) -> ScenarioResult:
    """`shutdown_runs` runs, each against a fresh server; never raises."""
    counts = env.counts
    result = ScenarioResult(name, description, shutdown_runs=[])
    started = time.perf_counter()
    answered: Counter = Counter()
    for index in range(counts.shutdown_runs):
        run = ShutdownRun(counts.shutdown_clients)
        result.shutdown_runs.append(run)
        try:
            with env.launch(f"{name}-{index + 1}") as server:
                if result.rss_before_mb is None:
                    result.rss_before_mb = server.sampler.current_mb()
                asyncio.run(asyncio.wait_for(_shutdown_run(server, counts, run), counts.scenario_timeout_s))
                result.peak_rss_mb = max(result.peak_rss_mb or 0.0, server.sampler.peak_mb)
                if server.sampler.killed_at_mb is not None:
                    run.error = f"killed by the bench: RSS {server.sampler.killed_at_mb:,.0f} MB over the cap"
                if run.error:
                    result.server_log_tail = server.log_tail()
        except ServerStartError as error:
            run.error = f"could not start the server: {error}"
        except TimeoutError:
            run.error = f"did not finish within {counts.scenario_timeout_s:.0f} s"
        except Exception as error:  # noqa: BLE001 - a run that breaks is reported, not raised
            run.error = f"bench error: {type(error).__name__}: {error}"
        answered.update(run.answered)
        answered[REFUSED] += run.refused
        answered[RESET + "/" + TIMEOUT] += run.lost
        exit_text = "no exit" if run.exit_code is None else f"exit {run.exit_code} after {run.sigterm_to_exit_s:.1f} s"
        first_refusal = run.first_refusal_after_sigterm_s
        refused_text = f"{run.refused} refused" + (
            f" (first {first_refusal:.1f} s after SIGTERM)" if first_refusal else ""
        )
        result.findings.append(
            f"run {index + 1}: {run.sent} sent, answered {format_statuses(run.answered)} "
            f"(sent after SIGTERM: {format_statuses(run.answered_after_sigterm)}), {run.lost} lost, "
            f"{refused_text}, {exit_text}" + (f" ({run.error})" if run.error else "")
        )
    result.attack_statuses = {key: count for key, count in answered.items() if count}
    errors = [f"run {i + 1}: {run.error}" for i, run in enumerate(result.shutdown_runs) if run.error]
    if errors:
        result.outcome = "; ".join(errors)
    result.target_met = (
        None
        if any("could not start" in e or "bench error" in e for e in errors)
        else all(run.lost == 0 and run.exit_code == 0 for run in result.shutdown_runs)
    )
    result.duration_s = time.perf_counter() - started
    return result


# --- 8. sa-memory -------------------------------------------------------------------------------


def attention_of(model: str) -> str:
    """ "SA" for a self-attention twin, "EA" for an External Attention one (from the bundled names)."""
    return "SA" if "-sa-" in model else "EA"


def predicted_item_mb(env: Env, model: str, positions: int) -> float | None:
    """The working memory of one item of `positions` positions that the model's manifest predicts
    (MB); None without a manifest or its memory model."""
    from easerve.artifacts.manifest import MANIFEST_FILE, load_manifest

    for folder in env.weights_dirs:
        if (folder / model / MANIFEST_FILE).is_file():
            memory = load_manifest(folder / model).memory
            return None if memory is None else memory.item_bytes(positions) / MB
    return None


def _memory_payloads(counts: Counts) -> list[tuple[str, str, int, int, list[tuple[bytes, dict[str, str]]]]]:
    """(model, input text, positions, item count, [(body, headers)] one per concurrent request)
    of each twin, EA first in each pair."""
    rng = np.random.default_rng(0)
    points = counts.memory_points
    cloud = rng.standard_normal((1, points, 3), dtype=np.float32)
    binary = v2_binary("points", [1, points, 3], "FP32", cloud.tobytes())
    as_json = (
        json.dumps({"inputs": [v2_input("points", [1, points, 3], "FP32", cloud.ravel().tolist())]}).encode(),
        {"content-type": "application/json"},
    )
    clouds = [binary if index % 2 == 0 else as_json for index in range(counts.memory_cloud_clients)]
    side = counts.memory_image_side
    image = rng.random((1, 3, side, side), dtype=np.float32)
    images = [v2_binary("image", [1, 3, side, side], "FP32", image.tobytes())] * counts.memory_image_clients
    cloud_text, image_text = f"[1, {points}, 3] binary+JSON", f"[1, 3, {side}, {side}] binary"
    return [
        (CLOUD_CLASSIFIER, cloud_text, points, len(clouds), clouds),
        (CLOUD_CLASSIFIER_SA, cloud_text, points, len(clouds), clouds),
        (SEGMENTER, image_text, side * side, len(images), images),
        (SEGMENTER_SA, image_text, side * side, len(images), images),
    ]


async def _given_back(server: ServerHandle, target_mb: float, within_s: float) -> tuple[float | None, float | None]:
    """(seconds until the server's RSS was at most `target_mb`, or None if not within `within_s`;
    its RSS then, MB), polled every 0.1 s without blocking the loop (bystanders keep running)."""
    started = time.perf_counter()
    while True:
        if server.exit_code() is not None:
            return None, None
        rss = server.sampler.current_mb()
        elapsed = time.perf_counter() - started
        if rss <= target_mb:
            return elapsed, rss
        if elapsed >= within_s:
            return None, rss
        await asyncio.sleep(0.1)


async def _attack_twin(server: ServerHandle, env: Env, result: ScenarioResult, http, payload: tuple) -> dict:
    """One twin's concurrent requests, then the wait for its memory to come back."""
    model, shape, positions, _, requests = payload
    counts = env.counts
    rss_start = server.sampler.start_window()
    started = time.perf_counter()
    answers = await asyncio.gather(
        *(send_for_headers(http, "POST", f"/v2/models/{model}/infer", data=body, headers=h) for body, h in requests)
    )
    answered = time.perf_counter()
    statuses = Counter(outcome for outcome, _, _ in answers)
    target_mb = (result.rss_before_mb or rss_start) + IDLE_RETURN_MB
    back_s, rss_after = await _given_back(server, target_mb, counts.give_back_s)
    peak = server.sampler.window_peak_mb
    bystanders = server.bystander.between(started, time.perf_counter()) if server.bystander else None
    latencies = sorted(latency for _, latency, _ in answers)
    return {
        "model": model,
        "attention": attention_of(model),
        "input": shape,
        "requests": len(answers),
        "statuses": dict(statuses),
        "503_without_retry_after": sum(1 for o, _, h in answers if o == "503" and "retry-after" not in h),
        "median_answer_s": round(latencies[len(latencies) // 2], 3),
        "slowest_answer_s": round(latencies[-1], 3),
        "attack_s": round(answered - started, 3),
        "predicted_item_mb": predicted_item_mb(env, model, positions),
        "rss_start_mb": round(rss_start, 1),
        "peak_rss_mb": round(peak, 1),
        "given_back_s": None if back_s is None else round(back_s, 2),
        "rss_after_mb": None if rss_after is None else round(rss_after, 1),
        "bystanders_sent": bystanders.sent if bystanders else 0,
        "bystanders_lost": bystanders.lost if bystanders else 0,
        "worst_bystander_ms": bystanders.worst_ms if bystanders else None,
    }


async def _sa_memory(server: ServerHandle, env: Env, result: ScenarioResult) -> None:
    counts = env.counts
    twins: list[dict] = []
    result.details.update(twins=twins, budget_mb=HEAVY_BUDGET_MB, give_back_s=counts.give_back_s)
    statuses: Counter = Counter()
    async with session(server.url, connections=0, timeout_s=counts.request_timeout_s) as http:
        for payload in _memory_payloads(counts):
            twin = await _attack_twin(server, env, result, http, payload)
            twins.append(twin)
            statuses.update({f"{twin['model']} {outcome}": count for outcome, count in twin["statuses"].items()})
            result.attack_statuses = dict(statuses)
            back = twin["given_back_s"]
            limit = f"{counts.give_back_s:g} s"
            returned = f"given back after {back:.1f} s" if back is not None else f"NOT given back within {limit}"
            result.findings.append(
                f"{twin['model']} ({twin['attention']}) {twin['input']} x{twin['requests']}: "
                f"{format_statuses(twin['statuses'])}, slowest {twin['slowest_answer_s']:.2f} s, peak RSS "
                f"{twin['peak_rss_mb']:,.0f} MB (start {twin['rss_start_mb']:,.0f}), "
                f"{returned} (RSS {twin['rss_after_mb']} MB)"
            )


def _twin_clean(twin: dict, before_mb: float, budget_mb: float) -> bool:
    statuses = twin["statuses"]
    served = statuses.get("200", 0) > 0 or set(statuses) == {"413"}  # refusing all is fine only as too large
    return (
        sum(statuses.values()) == twin["requests"] > 0
        and all(outcome in ("200", "413", "503") for outcome in statuses)
        and twin["503_without_retry_after"] == 0
        and served
        and twin["peak_rss_mb"] - before_mb <= budget_mb
        and twin["given_back_s"] is not None
        and twin["bystanders_lost"] == 0
    )


def _judge_sa_memory(result: ScenarioResult) -> bool:
    """Every twin of both pairs attacked; each request 200, 413 or 503 + Retry-After, some served
    unless all were too large; peak RSS within the server's budget over its start, back within
    IDLE_RETURN_MB of the start within give_back_s; no bystander lost."""
    twins = result.details.get("twins", [])
    before = result.rss_before_mb
    return (
        result.valid_lost == 0
        and before is not None
        and {twin["model"] for twin in twins} == {CLOUD_CLASSIFIER, CLOUD_CLASSIFIER_SA, SEGMENTER, SEGMENTER_SA}
        and all(_twin_clean(twin, before, result.details["budget_mb"]) for twin in twins)
    )


# --- 9. chunk-floods ----------------------------------------------------------------------------

FLOOD_CHUNK_TYPE = b"emPt"  # ancillary, private, reserved bit clear, safe to copy
JPEG_COMMENT = b"\xff\xfe\x00\x02"  # an empty COM marker segment (its length counts itself)


def png_chunk_flood(png: bytes, total_bytes: int) -> bytes:
    """`png` with empty ancillary chunks (12 bytes each, valid CRC) after its IHDR, to about
    `total_bytes`: still a valid PNG of the same pixels."""
    chunk = struct.pack(">I", 0) + FLOOD_CHUNK_TYPE + struct.pack(">I", zlib.crc32(FLOOD_CHUNK_TYPE))
    ihdr_end = 8 + 12 + struct.unpack(">I", png[8:12])[0]
    count = max(0, (total_bytes - len(png)) // len(chunk))
    return png[:ihdr_end] + chunk * count + png[ihdr_end:]


def jpeg_marker_flood(jpeg: bytes, total_bytes: int) -> bytes:
    """`jpeg` with empty COM marker segments (4 bytes each) after its SOI, to about `total_bytes`."""
    count = max(0, (total_bytes - len(jpeg)) // len(JPEG_COMMENT))
    return jpeg[:2] + JPEG_COMMENT * count + jpeg[2:]


@cache
def small_jpeg() -> bytes:
    """The bystanders' 64x64 image as a JPEG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(small_png())).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _floods(counts: Counts) -> list[tuple[str, bytes, str, int]]:
    """(name, body, content type, concurrent requests) of each flood."""
    return [
        ("png-chunks", png_chunk_flood(small_png(), counts.flood_bytes), "image/png", counts.flood_requests),
        ("jpeg-com", jpeg_marker_flood(small_jpeg(), counts.flood_bytes), "image/jpeg", counts.flood_requests),
        (
            "png-chunks-small",
            png_chunk_flood(small_png(), counts.small_flood_bytes),
            "image/png",
            counts.small_flood_requests,
        ),
    ]


async def _chunk_floods(server: ServerHandle, env: Env, result: ScenarioResult) -> None:
    counts = env.counts
    deadline_s = counts.flood_bystander_deadline_s
    floods = _floods(counts)
    bystanders = Tally()
    statuses: Counter = Counter()
    latencies: dict[str, list[float]] = {}
    result.details.update(
        flood_bytes={name: len(body) for name, body, _, _ in floods},
        bystander_deadline_s=deadline_s,
        bystander_limit_s=deadline_s + counts.deadline_margin_s,
    )

    async def bystander_stream(http) -> None:
        started = []
        for _ in range(counts.flood_bystanders):
            started.append(
                asyncio.create_task(classify(http, small_png(), timeout_s=deadline_s + 5.0, timeout=f"{deadline_s:g}"))
            )
            await asyncio.sleep(counts.flood_bystander_interval_s)
        for outcome, latency in await asyncio.gather(*started):
            bystanders.add(outcome, latency)

    async def flood(http, name: str, body: bytes, content_type: str) -> None:
        outcome, latency = await classify(http, body, content_type)
        statuses[f"{name} {outcome}"] += 1
        latencies.setdefault(name, []).append(round(latency, 3))

    async with session(server.url, connections=0, timeout_s=counts.request_timeout_s) as http:
        watching = asyncio.create_task(bystander_stream(http))
        try:
            await asyncio.sleep(counts.bystander_interval_s)
            await asyncio.gather(
                *(flood(http, name, body, kind) for name, body, kind, count in floods for _ in range(count))
            )
        finally:
            await watching
            add_valid(result, bystanders)
            result.attack_statuses = dict(statuses)
            result.details.update(
                flood_latencies_s=latencies,
                timed_bystanders=dict(bystanders.outcomes),
                worst_timed_bystander_ms=bystanders.worst_ms,
            )
    for name, body, _, count in floods:
        answers = {key.split(" ", 1)[1]: n for key, n in statuses.items() if key.split(" ", 1)[0] == name}
        result.findings.append(
            f"{name} ({len(body) / 1e6:.2f} MB) x{count}: {format_statuses(answers)}, "
            f"slowest {max(latencies.get(name, [0.0])):.2f} s"
        )
    worst = bystanders.worst_ms
    result.findings.append(
        f"?timeout={deadline_s:g} bystanders: {bystanders.sent - bystanders.lost}/{bystanders.sent} answered 2xx, "
        "slowest " + ("-" if worst is None else f"{worst:,.0f} ms")
    )


def _judge_chunk_floods(result: ScenarioResult) -> bool:
    """Every flood refused 4xx; every ?timeout bystander 2xx within its deadline and margin; peak
    RSS within the server's budget over its start."""
    details = result.details
    worst_ms = details.get("worst_timed_bystander_ms")
    before, peak = result.rss_before_mb, result.peak_rss_mb
    return (
        result.valid_lost == 0
        and bool(result.attack_statuses)
        and all(_is_4xx(key.rsplit(" ", 1)[-1]) for key in result.attack_statuses)
        and bool(details.get("timed_bystanders"))
        and worst_ms is not None
        and worst_ms <= details["bystander_limit_s"] * 1000
        and None not in (before, peak)
        and peak - before <= HEAVY_BUDGET_MB
    )


def _percentile_ms(latencies_s: list[float], share: float) -> float:
    ordered = sorted(latencies_s)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


async def _loop_stalls(server: ServerHandle, env: Env, result: ScenarioResult) -> None:
    counts = env.counts
    png = small_png()
    padded = png_chunk_flood(png, len(png) + 12 * counts.stall_chunks)  # empty chunks are 12 bytes
    body, content_type = multipart([padded] * counts.stall_images)
    statuses: Counter = Counter()
    probes = Tally()
    attacking = asyncio.Event()
    result.details.update(stall_body_bytes=len(body), probe_p99_limit_ms=counts.stall_probe_p99_ms)

    async def probe(http) -> None:
        while not attacking.is_set():
            outcome, latency = await send(http, "GET", "/healthz", counts.bystander_timeout_s)
            probes.add(outcome, latency)
            await asyncio.sleep(counts.stall_probe_interval_s)

    async def attacker(http) -> None:
        for _ in range(counts.stall_requests):
            outcome, _ = await classify(http, body, content_type)
            statuses[outcome] += 1

    async with session(server.url, connections=0, timeout_s=counts.request_timeout_s) as http:
        probing = asyncio.create_task(probe(http))
        try:
            await asyncio.gather(*(attacker(http) for _ in range(counts.stall_clients)))
        finally:
            attacking.set()
            await probing
    add_valid(result, probes)
    result.attack_statuses = dict(statuses)
    p50, p99 = (_percentile_ms(probes.latencies_s, share) for share in (0.5, 0.99)) if probes.sent else (None, None)
    result.details.update(probes=dict(probes.outcomes), probe_p50_ms=p50, probe_p99_ms=p99)
    result.findings.append(
        f"{counts.stall_clients} clients x {counts.stall_requests} requests of {counts.stall_images} PNGs padded with "
        f"{counts.stall_chunks} empty chunks each ({len(body) / 1e3:.0f} kB): {format_statuses(statuses)}; "
        f"/healthz every {counts.stall_probe_interval_s * 1000:.0f} ms: "
        f"{probes.sent - probes.lost}/{probes.sent} answered 2xx, "
        + ("-" if p50 is None else f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, worst {probes.worst_ms:.0f} ms")
    )


def _judge_loop_stalls(result: ScenarioResult) -> bool:
    """Every padded request answered 200 (the images are valid); every probe 2xx, their p99
    within the limit."""
    details = result.details
    p99 = details.get("probe_p99_ms")
    return (
        result.valid_lost == 0
        and bool(result.attack_statuses)
        and set(result.attack_statuses) == {"200"}
        and p99 is not None
        and p99 <= details["probe_p99_limit_ms"]
    )


# --- 10. client-leaves --------------------------------------------------------------------------

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples in Prometheus text whose labels include `labels` (0 if none)."""
    total = 0.0
    for match in _SAMPLE.finditer(text):
        if match["name"] != name:
            continue
        have = dict(_LABEL.findall(match["labels"] or ""))
        if all(have.get(key) == value for key, value in labels.items()):
            total += float(match["value"])
    return total


async def _served_counts(http, model: str) -> dict[str, float]:
    """From /metrics: the model's items computed and its requests answered 200 and 499."""
    async with http.get("/metrics") as response:
        text = await response.text()
    return {
        "computed": metric_value(text, "nv_inference_count_total", model=model),
        "200": metric_value(text, "easerve_http_requests_total", model=model, code="200"),
        "499": metric_value(text, "easerve_http_requests_total", model=model, code="499"),
    }


async def _leave_after_upload(port: int, request: bytes, leave_after_s: float) -> str:
    """Sends `request` in full, waits `leave_after_s`, closes: what came back meanwhile."""
    connection = await RawConnection.open(port)
    try:
        await connection.write(request)
        closed, received = await connection.wait_closed_by_server(leave_after_s)
    except ConnectionClosed:
        return "closed by the server"
    finally:
        connection.close()
    if status := _answer_status(received):
        return f"answered {status} before leaving"
    return "closed by the server" if closed else "left"


async def _client_leaves(server: ServerHandle, env: Env, result: ScenarioResult) -> None:
    """A pct-sa-tiny request of memory_points points computes; meanwhile clients upload a small
    pct-sa-tiny request (queued behind it) and leave, others send the same and wait."""
    counts = env.counts
    model = CLOUD_CLASSIFIER_SA
    cloud = np.random.default_rng(1).standard_normal((1, counts.memory_points, 3), dtype=np.float32)
    blocker_body, blocker_headers = v2_binary("points", [1, counts.memory_points, 3], "FP32", cloud.tobytes())
    npy = load_samples().clouds[0].npy
    route = f"/v1/pointcloud/classify?model={model}"
    request = raw_request("POST", route, server.port, OCTET_STREAM, npy)
    stayers = Tally()
    async with session(server.url, connections=0, timeout_s=counts.request_timeout_s) as http:
        before = await _served_counts(http, model)
        sent = time.perf_counter()
        blocker = asyncio.create_task(
            send(http, "POST", f"/v2/models/{model}/infer", data=blocker_body, headers=blocker_headers)
        )
        await asyncio.sleep(0.2)
        leaving = [_leave_after_upload(server.port, request, counts.leave_after_s) for _ in range(counts.leavers)]
        staying = [
            send(http, "POST", "/v1/pointcloud/classify", params={"model": model}, data=npy, headers=OCTET_STREAM)
            for _ in range(counts.stayers)
        ]
        left = await asyncio.gather(*leaving)
        all_left_s = time.perf_counter() - sent
        for outcome, latency in await asyncio.gather(*staying):
            stayers.add(outcome, latency)
        blocker_outcome, blocker_s = await blocker
        add_valid(result, stayers)
        await asyncio.sleep(0.5)  # the withdrawn requests' answers are counted as they finish
        after = await _served_counts(http, model)
    delta = {key: after[key] - before[key] for key in before}
    result.attack_statuses = dict(Counter(left))
    result.details.update(
        leavers=counts.leavers,
        left=dict(Counter(left)),
        blocker=blocker_outcome,
        blocker_s=round(blocker_s, 3),
        all_left_after_s=round(all_left_s, 3),
        stayers=dict(stayers.outcomes),
        metrics_delta=delta,
    )
    result.findings += [
        f"blocker ({model} [1, {counts.memory_points}, 3]): {blocker_outcome} after {blocker_s:.2f} s; "
        f"{counts.leavers} clients left {all_left_s:.2f} s after it was sent ({format_statuses(Counter(left))})",
        f"/metrics for {model}: {delta['499']:g} answered 499, {delta['200']:g} answered 200, "
        f"{delta['computed']:g} items computed; staying clients {format_statuses(stayers.outcomes)}",
    ]


def _judge_client_leaves(result: ScenarioResult) -> bool:
    """The leavers left while the blocker still computed; each was counted 499 and none computed
    (items computed = requests answered 200); the staying clients were answered."""
    details = result.details
    delta = details.get("metrics_delta")
    return (
        result.valid_lost == 0
        and delta is not None
        and details["left"] == {"left": details["leavers"]}
        and details["blocker"] == "200"
        and details["all_left_after_s"] < details["blocker_s"]
        and delta["499"] == details["leavers"]
        and delta["computed"] == delta["200"]
    )


# --- 11. slow-body ------------------------------------------------------------------------------


def _body_timeout_s(counts: Counts) -> float:
    return Settings().body_timeout_s if counts.slow_body_timeout_s is None else counts.slow_body_timeout_s


def _slow_body_args(counts: Counts) -> tuple[str, ...]:
    return () if counts.slow_body_timeout_s is None else ("--body-timeout", f"{counts.slow_body_timeout_s:g}")


SLOW_BODY_MARGIN_S = 2.0


async def _slow_body(server: ServerHandle, env: Env, result: ScenarioResult) -> None:
    counts = env.counts
    limit_s = _body_timeout_s(counts)
    body = small_png()
    head = raw_request("POST", f"/v1/classify?model={CLASSIFIER}", server.port, PNG, body)[: -len(body)]

    async def trickle() -> tuple[str, float | None]:
        """(what became of the connection, seconds from its opening to the server closing it)."""
        connection = await RawConnection.open(server.port)
        opened = time.perf_counter()

        async def drip() -> None:
            for index in range(len(body) - 1):  # never the last byte
                await connection.write(body[index : index + 1])
                await asyncio.sleep(counts.slow_body_interval_s)

        dripping = asyncio.create_task(drip())
        try:
            await connection.write(head)
            closed, received = await connection.wait_closed_by_server(limit_s + SLOW_BODY_MARGIN_S + 3.0)
        except ConnectionClosed:
            closed, received = True, b""
        finally:
            dripping.cancel()
            await asyncio.gather(dripping, return_exceptions=True)
            connection.close()
        status = _answer_status(received) or "no answer"
        return (f"{status} closed" if closed else f"{status} kept open"), (
            time.perf_counter() - opened if closed else None
        )

    held = await asyncio.gather(*(trickle() for _ in range(counts.slow_bodies)))
    closed_after = [round(seconds, 2) for _, seconds in held if seconds is not None]
    result.attack_statuses = dict(Counter(what for what, _ in held))
    result.details.update(body_timeout_s=limit_s, closed_after_s=closed_after, connections=counts.slow_bodies)
    span = f" after {min(closed_after):.1f}-{max(closed_after):.1f} s" if closed_after else ""
    result.findings.append(
        f"{counts.slow_bodies} bodies at 1 byte per {counts.slow_body_interval_s:g} s (--body-timeout {limit_s:g}): "
        f"{format_statuses(result.attack_statuses)}{span}"
    )


def _judge_slow_body(result: ScenarioResult) -> bool:
    """Every slow body answered 408 and closed, within the body timeout and a margin."""
    details = result.details
    closed = details.get("closed_after_s", [])
    return (
        result.valid_lost == 0
        and bool(closed)
        and result.attack_statuses == {"408 closed": details["connections"]}
        and len(closed) == details["connections"]
        and max(closed) <= details["body_timeout_s"] + SLOW_BODY_MARGIN_S
    )


# --- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    description: str
    target: str
    attack: Attack | None  # None: shutdown, which runs its own servers
    judge: Callable[[ScenarioResult], bool] | None = None
    serve_args: Callable[[Counts], tuple[str, ...]] | None = None  # flags of this scenario's server


SCENARIOS: dict[str, Scenario] = {
    "batch-poisoning": Scenario(
        "valid /v1/generate (and v1 segment, detect, point cloud) traffic beside poisoned v2 requests to the "
        "same models: eagan label 99, eanet H=0, pct 0 points, eadet 1x1",
        "no valid request lost; every poisoned request answered 4xx",
        _batch_poisoning,
        _judge_batch_poisoning,
    ),
    "heavy-images": Scenario(
        "concurrent multipart requests of all-black 5000x5000 PNGs to /v1/classify, then /v1/segment",
        "each heavy request 200 within the budgets, 413 or 503; peak RSS over the start within the server's "
        "memory budget, back within 150 MB of it after; no bystander lost",
        _heavy_images,
        _judge_heavy_images,
    ),
    "v2-huge-tensor": Scenario(
        "one pct-sa-tiny v2 request (binary tensor) of [1, 32768, 3] points",
        "answered 4xx (over --max-model-points); no bystander lost",
        _v2_huge_tensor,
        _judge_v2_huge_tensor,
    ),
    "deadline": Scenario(
        "classify requests with ?timeout=2 while heavy requests and 512x512 segment load run",
        "every ?timeout=2 request answered (200 or 504) within 2.5 s",
        _deadline,
        _judge_deadline,
    ),
    "slow-connections": Scenario(
        "slowloris connections (part of the headers, then nothing) and idle connections, with /healthz probes",
        "every slow connection answered 408 and closed, every idle one closed; probes and bystanders answered",
        _slow_connections,
        _judge_slow_connections,
    ),
    "malformed-500s": Scenario(
        "a PLY with a repeated property, a .npy claiming (10**10, 3), v2 shapes whose element count overflows "
        "int64 (pct [2**62, 4, 3]; eanet [1, 3, 2**32, 2**32], JSON and binary), a v2 header length written in a "
        "non-ASCII digit, v2 values of 3e38 (finite, but the model overflows), a v2 timeout of 1e15 us, truncated "
        "JSON to a point-cloud route, a truncated multipart body; then a valid request on the same connection",
        "every malformed request answered 4xx; the connection still serves the next request",
        _malformed,
        _judge_malformed,
    ),
    "shutdown": Scenario(
        "closed-loop keep-alive /v1/classify clients, SIGTERM to the server mid-load; a fresh server per run",
        "no request lost in any run; exit code 0",
        None,
    ),
    "sa-memory": Scenario(
        "concurrent v2 requests at the largest sizes allowed, twin by twin: pct-ea-tiny then pct-sa-tiny "
        "(16 x [1, 8192, 3], binary and JSON), eanet-ea-tiny then eanet-sa-tiny (4 x [1, 3, 1024, 1024])",
        "each request 200, 413 or 503 + Retry-After (some 200 unless all 413); each twin's peak RSS within the "
        "server memory budget over the start, back within 150 MB of the start within 10 s; no bystander lost",
        _sa_memory,
        _judge_sa_memory,
    ),
    "chunk-floods": Scenario(
        "a valid 64x64 PNG padded with empty ancillary chunks to 30 MB, a 64x64 JPEG padded with empty COM "
        "markers to 30 MB (4 of each at once) and 16 PNGs of 255 KB padded alike, beside 64x64 classify "
        "bystanders with ?timeout=2 every 0.1 s",
        "every flood answered 4xx; every ?timeout=2 bystander 200 within 2.5 s; peak RSS within the server "
        "memory budget over the start",
        _chunk_floods,
        _judge_chunk_floods,
    ),
    "loop-stalls": Scenario(
        "16 clients each sending 8 multipart requests of 12 64x64 PNGs padded with 1000 empty chunks each "
        "(under every cap: 217 kB, parsed where small bodies are) one after another, /healthz probed every 50 ms",
        "every padded request answered 200; every /healthz probe 2xx with p99 within 250 ms; no bystander lost",
        _loop_stalls,
        _judge_loop_stalls,
    ),
    "client-leaves": Scenario(
        "clients upload a pct-sa-tiny request queued behind a running [1, 8192, 3] batch, then close the "
        "connection; others send the same and wait",
        "each leaver counted 499 in /metrics and not computed (items computed = answered 200); no valid request lost",
        _client_leaves,
        _judge_client_leaves,
    ),
    "slow-body": Scenario(
        "connections sending a 64x64 PNG's body one byte every 0.5 s, never finishing",
        "every slow body answered 408 and closed within the body timeout + 2 s; no bystander lost",
        _slow_body,
        _judge_slow_body,
        _slow_body_args,
    ),
}


def run_scenario(name: str, env: Env) -> ScenarioResult:
    scenario = SCENARIOS[name]
    if scenario.attack is None:
        result = run_shutdown(name, scenario.description, env)
    else:
        serve_args = scenario.serve_args(env.counts) if scenario.serve_args else ()
        result = run_attack(
            name, scenario.description, env, scenario.attack, scenario.judge or (lambda _: True), serve_args
        )
    result.target = scenario.target
    if not result.completed and result.target_met is True:
        result.target_met = None
    if result.outcome.startswith(("could not start", "bench error")):
        result.target_met = None
    return result
