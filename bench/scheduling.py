"""`easerve bench scheduling`: goodput under overload and mixed load, every scheduling policy in
one run.

One stream per model (default: the EA model of each task the weights hold), with skewed
popularity (`--shares`) and mixed deadlines (`--deadline-factors`: k times the model's batch-1
latency, measured first), sent open loop (Poisson, and bursty: gamma gaps with CV 3) at offered
loads from 0.5x to 3x of capacity (`--loads`), against one server per policy (`--policies`:
`easerve serve --scheduler slack|fifo|free`); then every policy's server side by side at low
load, in turns (their p50s compared); then closed loop on one model with a small queue, 16
against 128 clients. Capacity is the mix's throughput under closed-loop saturation (32
clients, no deadline) on the `--capacity-policy` server. Beside the measurements, the
discrete-event simulator (`bench.scheduling_sim`) runs the same policies over the latency tables
the servers measured, and over a GPU-shaped projection of them (an assumed shape, not a
measurement). Writes OUT/bench_scheduling.md, .json and .png.

Only the standard library is imported at module level (see easerve/cli.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from easerve.artifacts.machine import cpu_model, load_average
from easerve.bench.arguments import add_weights_dirs, chosen_models, ea_model_of_each_task, serve_command

if TYPE_CHECKING:
    from easerve.bench.scheduling_load import Stream
    from easerve.loadtest.server import RunningServer

POLICIES = ("slack", "fifo", "free")
PATTERNS = ("poisson", "bursty")
DEFAULT_LOADS = (0.25, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5, 2.0, 3.0)
# Per model, in the order of the task specs (classify, detect, segment, generate, point cloud
# classify, point cloud segment): popularity, and deadline as k x batch-1 latency.
DEFAULT_SHARES = (100.0, 30.0, 30.0, 20.0, 30.0, 20.0)
DEFAULT_DEADLINE_FACTORS = (10.0, 25.0, 10.0, 25.0, 10.0, 5.0)
CAPACITY_CLIENTS = 32
CLOSED_LOOP_CLIENTS = (16, 128)
CLOSED_LOOP_QUEUE = 16
CLOSED_LOOP_DEADLINE_S = 1.0
# The low-load comparison: every policy's server up at once, short cells in turn, the order
# rotated each round and one arrival sequence per round for all, so that the machine's drift
# between one server's run and the next (as large as the differences sought) falls on all alike.
LOW_LOAD_ROUNDS = 6
BATCH1_REQUESTS = 20
REPORT_NAME = "bench_scheduling"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_weights_dirs(parser)
    parser.add_argument(
        "--models", nargs="+", metavar="NAME", help="one stream each (default: the EA model of each task)"
    )
    parser.add_argument(
        "--shares",
        type=float,
        nargs="+",
        metavar="W",
        help="popularity of each model's stream (default: 100 30 30 20 30 20)",
    )
    parser.add_argument(
        "--deadline-factors",
        type=float,
        nargs="+",
        metavar="K",
        help="each stream's deadline as K x its model's batch-1 latency (default: 10 25 10 25 10 5)",
    )
    parser.add_argument(
        "--policies", nargs="+", choices=POLICIES, default=list(POLICIES), help="servers compared (default: all)"
    )
    parser.add_argument(
        "--capacity-policy",
        choices=POLICIES,
        default="free",
        help="the server whose closed-loop throughput is 1x (default: %(default)s, the behaviour before the scheduler)",
    )
    parser.add_argument(
        "--loads", type=float, nargs="+", default=list(DEFAULT_LOADS), metavar="X", help="offered load, x capacity"
    )
    parser.add_argument("--patterns", nargs="+", choices=PATTERNS, default=list(PATTERNS), help="arrival processes")
    parser.add_argument("--duration", type=float, default=6.0, metavar="SECONDS", help="each open-loop cell")
    parser.add_argument("--settle", type=float, default=1.0, metavar="SECONDS", help="pause between cells")
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="load at the lowest offered load on each server before its cells, not counted",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the arrival times")
    parser.add_argument("--sim-duration", type=float, default=20.0, metavar="SECONDS", help="simulated time per cell")
    parser.add_argument("--ready-timeout", type=float, default=120.0, metavar="SECONDS")
    parser.add_argument(
        "--out", type=Path, default=Path("results"), metavar="DIR", help=f"writes DIR/{REPORT_NAME}.md, .json, .png"
    )


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 done, 1 a server failed, 2 bad input."""
    from easerve.bench import scheduling_report as report

    models = chosen_models(args, _chosen_models)
    if models is None:
        return 2
    shares = _per_model(args.shares, DEFAULT_SHARES, len(models))
    factors = _per_model(args.deadline_factors, DEFAULT_DEADLINE_FACTORS, len(models))
    if shares is None or factors is None or min(args.loads) <= 0 or args.duration <= 0:
        print("error: --shares and --deadline-factors take one value per model; --loads and --duration must be > 0")
        return 2
    environment = _environment()
    try:
        results = _measure(args, models, shares, factors)
    except RuntimeError as error:
        print(f"error: {error}")
        return 1
    results["simulation"] = report.simulate_policies(results, args.policies, args.loads, args.sim_duration, args.seed)
    results["environment"] = f"{environment}; load average after: {load_average()}."
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{REPORT_NAME}.json").write_text(json.dumps(results, indent=1))
    report.write(results, args.out / f"{REPORT_NAME}.md", args.out / f"{REPORT_NAME}.png")
    print(f"wrote {args.out / REPORT_NAME}.md, .json and .png")
    return 0


def _per_model(given: list[float] | None, default: tuple[float, ...], count: int) -> list[float] | None:
    if given is None:
        return [default[index % len(default)] for index in range(count)]
    return given if len(given) == count and min(given) > 0 else None


def _chosen_models(weights_dirs: list[Path], names: list[str] | None) -> list[str]:
    """`names`, or the first EA model served for each task endpoint, in the endpoints' order."""
    from easerve.artifacts.tasks import TASKS
    from easerve.service.model_files import ModelFilesError, discover_models

    if names:
        return [files.name for files in discover_models(weights_dirs, names)]
    chosen = [files.name for files in ea_model_of_each_task(weights_dirs, TASKS)]
    if not chosen:
        raise ModelFilesError(f"no EA model in {', '.join(map(str, weights_dirs))}")
    return chosen


def streams_for(models: list[dict[str, Any]], shares: list[float], deadlines: list[float]) -> list[Stream]:
    """One stream per model (as `/v1/models` describes it): its task endpoint's first sample
    request (point clouds as `.npy`), `timeout=` its deadline."""
    from easerve.artifacts.tasks import task_spec
    from easerve.bench.scheduling_load import Stream
    from easerve.loadtest.endpoints import prepared_requests
    from easerve.loadtest.samples import load_samples

    samples = load_samples()
    streams = []
    for model, share, deadline in zip(models, shares, deadlines, strict=True):
        endpoint = task_spec(model["task"]).endpoint
        request = prepared_requests(endpoint, samples, {"model": model["name"]}, clouds_as_npy=True)[0]
        url = f"{request.url}&timeout={deadline:.4f}"
        streams.append(Stream(model["name"], url, request.body, request.content_type, deadline, share))
    return streams


def _measure(args: argparse.Namespace, names: list[str], shares: list[float], factors: list[float]) -> dict[str, Any]:
    from easerve.bench import scheduling_load as load
    from easerve.bench.scheduling_report import summarize

    results: dict[str, Any] = {"models": names, "shares": shares, "deadline_factors": factors, "policies": {}}
    order = [args.capacity_policy, *(policy for policy in args.policies if policy != args.capacity_policy)]
    streams: list[Stream] = []
    for policy in order:
        with _running_server(args, names, ["--scheduler", policy]) as server:
            described = _described(server.url)
            described["models"].sort(key=lambda model: names.index(model["name"]))
            if not streams:
                calibration = _calibrate(server.url, described["models"], shares, factors, args.duration)
                results.update(calibration["results"])
                streams = calibration["streams"]
                print(f"capacity {results['capacity_rps']:.0f} req/s; deadlines (ms): {results['deadlines_ms']}")
            if policy not in args.policies:
                continue
            if args.warmup > 0:
                load.open_loop(
                    server.url,
                    streams,
                    min(args.loads) * results["capacity_rps"],
                    args.warmup,
                    "poisson",
                    args.seed + 1,
                )
            cells = []
            for pattern in args.patterns:
                for factor in sorted(args.loads):
                    rate = factor * results["capacity_rps"]
                    run = load.open_loop(server.url, streams, rate, args.duration, pattern, args.seed)
                    cell = summarize(run, streams, policy, pattern, factor, rate, described["scheduler"]["slots"])
                    print(
                        f"{policy:5} {pattern:7} {factor:4g}x: goodput {cell['goodput']:6.1f}/s, attainment "
                        f"{cell['attainment']:.3f} (worst {cell['worst_attainment']:.3f})"
                    )
                    cells.append(cell)
                    time.sleep(args.settle)
            after = _described(server.url)
            results["policies"][policy] = {"cells": cells, "models": after["models"], "scheduler": after["scheduler"]}
    results["low_load"] = _low_load_side_by_side(args, names, streams, results["capacity_rps"])
    results["closed_loop"] = _closed_loops(args, names[0], streams[0])
    return results


def _low_load_side_by_side(
    args: argparse.Namespace, names: list[str], streams: list[Stream], capacity_rps: float
) -> dict[str, Any]:
    """p50 per model and policy at `LOW_LOAD` times capacity, every policy's server running at
    once and served in turn (see `LOW_LOAD_ROUNDS`): the answers of all rounds pooled."""
    from contextlib import ExitStack

    from easerve.bench import scheduling_load as load
    from easerve.bench.scheduling_report import LOW_LOAD, pooled_p50_ms

    rate, cell_s = LOW_LOAD * capacity_rps, args.duration / 2
    outcomes: dict[str, list] = {policy: [] for policy in args.policies}
    with ExitStack() as servers:
        urls = {
            policy: servers.enter_context(_running_server(args, names, ["--scheduler", policy])).url
            for policy in args.policies
        }
        for url in urls.values():
            load.open_loop(url, streams, rate, max(args.warmup, 1.0), "poisson", args.seed + 1)
        for round_index in range(LOW_LOAD_ROUNDS):
            turn = round_index % len(args.policies)
            for policy in [*args.policies[turn:], *args.policies[:turn]]:
                run = load.open_loop(urls[policy], streams, rate, cell_s, "poisson", args.seed + round_index)
                outcomes[policy].extend(run.outcomes)
    p50 = {policy: pooled_p50_ms(found, streams) for policy, found in outcomes.items()}
    for policy, figures in p50.items():
        print(f"{policy:5} {LOW_LOAD:g}x side by side, p50 ms: {figures}")
    return {"load": LOW_LOAD, "rounds": LOW_LOAD_ROUNDS, "cell_s": cell_s, "p50_ms": p50}


def _calibrate(
    url: str, models: list[dict[str, Any]], shares: list[float], factors: list[float], duration_s: float
) -> dict[str, Any]:
    """Batch-1 latency per model (sequential requests), the deadlines from it, and capacity."""
    import statistics

    import httpx

    from easerve.bench import scheduling_load as load

    probes = streams_for(models, shares, [60.0] * len(models))
    batch1_s = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for stream in probes:
            times = []
            for _ in range(BATCH1_REQUESTS):
                started = time.perf_counter()
                response = client.post(stream.url, content=stream.body, headers={"content-type": stream.content_type})
                times.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{stream.model} answered {response.status_code}: {response.text[:200]}")
            batch1_s.append(statistics.median(times[len(times) // 4 :]))
    deadlines = [factor * seconds for factor, seconds in zip(factors, batch1_s, strict=True)]
    saturated = load.closed_loop(url, probes, CAPACITY_CLIENTS, 1.0, duration_s)
    capacity = saturated.statuses.get(200, 0) / duration_s
    return {
        "streams": streams_for(models, shares, deadlines),
        "results": {
            "batch1_ms": [round(1000 * seconds, 2) for seconds in batch1_s],
            "deadlines_ms": [round(1000 * seconds, 1) for seconds in deadlines],
            "capacity_rps": capacity,
        },
    }


def _closed_loops(args: argparse.Namespace, model: str, stream: Stream) -> list[dict[str, Any]]:
    """Per policy: one model, queue of `CLOSED_LOOP_QUEUE`, 16 then 128 closed-loop clients;
    good = answered 200 within `CLOSED_LOOP_DEADLINE_S`."""
    import dataclasses

    from easerve.bench import scheduling_load as load

    url = stream.url.rsplit("&timeout=", 1)[0] + f"&timeout={CLOSED_LOOP_DEADLINE_S}"
    closed = dataclasses.replace(stream, url=url, deadline_s=CLOSED_LOOP_DEADLINE_S)
    rows = []
    for policy in args.policies:
        flags = ["--scheduler", policy, "--max-queue-size", str(CLOSED_LOOP_QUEUE)]
        with _running_server(args, [model], flags) as server:
            for clients in CLOSED_LOOP_CLIENTS:
                run = load.closed_loop(server.url, [closed], clients, 1.0, args.duration)
                rows.append({"policy": policy, "clients": clients, "goodput": run.goodput, "statuses": run.statuses})
                print(f"{policy:5} closed loop, {clients:3} clients: goodput {run.goodput:6.1f}/s {run.statuses}")
    return rows


def _described(url: str) -> dict[str, Any]:
    import httpx

    return httpx.get(f"{url}/v1/models", timeout=30).json()


@contextmanager
def _running_server(args: argparse.Namespace, names: list[str], flags: list[str]) -> Iterator[RunningServer]:
    from easerve.loadtest.server import free_port, running_server_process

    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="easerve-bench-scheduling-")) / "server.log"
    command = [*serve_command(args.weights_dirs, tuple(names), flags), "--port", str(port)]
    with running_server_process(command, f"http://127.0.0.1:{port}", log_path, args.ready_timeout) as running:
        yield running


def _environment() -> str:
    import onnxruntime

    return (
        f"Measured {datetime.date.today().isoformat()} on {cpu_model()} ({platform.system()}), onnxruntime "
        f"{onnxruntime.__version__}, `easerve serve` defaults but for --scheduler; clients (asyncio + aiohttp, "
        f"one process) and servers share the machine; load average before: {load_average()}"
    )
