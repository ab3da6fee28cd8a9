"""`easerve bench serve-ray`: the Ray Serve application beside the single-process server, on
loopback, on the same machine.

For one image model (default: eamlp-ea-tiny) these servers are started in turn on 127.0.0.1 and
loaded by closed-loop clients at each --concurrency: `easerve serve` with one model instance,
`easerve serve --instances N` (as many runners as the largest Ray replica count), and
`easerve serve --engine ray --replicas R` for each R of --replicas (a local Ray cluster: Serve's
HTTP proxy, the ingress replica, R model replicas). Every server runs the same onnxruntime
threads per runner (--threads). Reported: throughput, latency percentiles, failures and the mean
batch, and the per-request overhead Ray adds at one client (its p50 minus the single-process
server's). Writes OUT/bench_serve_ray.md.

    python -m easerve.bench.serve_ray --concurrency 1 8 32 --replicas 1 2

Only the standard library is imported at module level (see easerve/cli.py).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from easerve.artifacts.machine import cpu_model, load_average
from easerve.bench.arguments import add_weights_dirs, weights_flags

if TYPE_CHECKING:
    from easerve.bench.report import TableData
    from easerve.bench.serve_load import LoadRun

REPORT_NAME = "bench_serve_ray"
DEFAULT_MODEL = "eamlp-ea-tiny"

METHOD = """\
Each server runs in its own process tree on 127.0.0.1 with the same model and onnxruntime
threads per runner; the load comes from this process (asyncio + aiohttp, one keep-alive
connection per client, `bench.serve_load`) on the same machine, so clients, HTTP proxy, ingress
and model replicas all share its cores. Each client sends the same real image (the load test's
64x64 shape for classification, a 128x128 scene for segmentation) as a raw PNG body and sends
the next as soon as the answer arrives. After --warmup seconds, the requests answered inside the
next --duration seconds count: throughput is those answered 200 per second, latency is send to
answer. Mean batch: `nv_inference_count` / `nv_inference_exec_count` over the window, from the
server's /metrics (on Ray, the ingress counts each request's share of its batch). Servers:
`easerve serve` (1 instance), `easerve serve --instances N`, and `easerve serve --engine ray
--replicas R` (a fresh local Ray cluster per server: GCS, raylet, Serve's controller and HTTP
proxy, one ingress replica, R model replicas, each replica its own process). Ray's overhead:
its p50 at one client minus the single-process server's p50 at one client."""


@dataclass(frozen=True)
class Server:
    label: str
    engine: str  # local | ray
    count: int  # instances (local) or replicas (ray)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_weights_dirs(parser)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="image model to measure (default: %(default)s)")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 8, 32], metavar="N", help="clients (default: %(default)s)"
    )
    parser.add_argument(
        "--replicas", type=int, nargs="+", default=[1, 2], metavar="R", help="Ray model replicas (default: %(default)s)"
    )
    parser.add_argument("--duration", type=float, default=8.0, metavar="SECONDS", help="window (default: %(default)s)")
    parser.add_argument("--warmup", type=float, default=2.0, metavar="SECONDS", help="uncounted (default: %(default)s)")
    parser.add_argument(
        "--threads", type=int, default=1, metavar="N", help="onnxruntime intra-op threads per runner (default: 1)"
    )
    parser.add_argument("--ready-timeout", type=float, default=180.0, metavar="SECONDS")
    parser.add_argument("--out", type=Path, default=Path("results"), metavar="DIR")


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 done, 1 a server failed, 2 bad input."""
    from easerve.bench.report import print_table, write_report
    from easerve.bench.serve_pipeline import IMAGE_TASKS
    from easerve.service.model_files import ModelFilesError, discover_models

    args.weights_dirs = args.weights_dirs or [Path("weights")]
    try:
        (files,) = discover_models(args.weights_dirs, [args.model])
    except ModelFilesError as error:
        print(f"error: {error}")
        return 2
    if files.manifest.task not in IMAGE_TASKS:
        print(f"error: {args.model} is a {files.manifest.task} model; measured: {', '.join(IMAGE_TASKS)}")
        return 2
    task = IMAGE_TASKS[files.manifest.task]
    servers = [Server("easerve serve", "local", 1)]
    if max(args.replicas) > 1:
        servers.append(Server(f"easerve serve --instances {max(args.replicas)}", "local", max(args.replicas)))
    servers += [Server(f"--engine ray --replicas {count}", "ray", count) for count in args.replicas]
    environment_before = _environment(args.threads)
    try:
        runs = _measure(args, servers, task.route, task.sample_png())
    except RuntimeError as error:
        print(f"error: {error}")
        return 1
    tables = [_load_table(args.model, servers, runs), _overhead_table(servers, runs)]
    for table in tables:
        print_table(table)
    environment = f"{environment_before}; load average after: {load_average()}."
    print(environment)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{REPORT_NAME}.md"
    write_report(path, "serve-ray", environment, tables, [], METHOD)
    print(f"wrote {path}")
    return 0


def _measure(args: argparse.Namespace, servers: list[Server], route: str, png: bytes) -> dict[tuple[str, int], LoadRun]:
    from easerve.bench.serve_load import Workload, run_load
    from easerve.loadtest.server import free_port, running_server

    workload = Workload(route, args.model, png)
    runs = {}
    logs = Path(tempfile.mkdtemp(prefix="easerve-bench-serve-ray-"))
    for server in servers:
        port = free_port()
        log_path = logs / f"{server.engine}-{server.count}.log"
        command = _command(server, args, port)
        with running_server(command, f"http://127.0.0.1:{port}", log_path, args.ready_timeout) as url:
            for concurrency in args.concurrency:
                run = run_load(url, workload, concurrency, args.warmup, args.duration)
                runs[(server.label, concurrency)] = run
                print(
                    f"{server.label}: {concurrency} clients: {run.throughput:,.1f} req/s, "
                    f"p50 {run.percentile_ms(50) or 0:.2f} ms, {run.failures} failed",
                    flush=True,
                )
    return runs


def _command(server: Server, args: argparse.Namespace, port: int) -> list[str]:
    weights = weights_flags(args.weights_dirs)
    command = [sys.executable, "-m", "easerve.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--models", args.model, "--intra-op-threads", str(args.threads), "--log-level", "warning", *weights]
    if server.engine == "ray":
        return [*command, "--engine", "ray", "--replicas", str(server.count)]
    return [*command, "--instances", str(server.count)]


def _load_table(model: str, servers: list[Server], runs: dict[tuple[str, int], LoadRun]) -> TableData:
    from easerve.bench.report import TableData

    rows = []
    for server in servers:
        for (label, concurrency), run in runs.items():
            if label != server.label:
                continue
            batch = f"{run.mean_batch_size:.2f}" if run.mean_batch_size is not None else "-"
            rows.append(
                (
                    label,
                    str(concurrency),
                    f"{run.throughput:,.1f}",
                    *(_ms(run.percentile_ms(p)) for p in (50, 95, 99)),
                    str(run.failures),
                    batch,
                )
            )
    headers = ("server", "clients", "req/s", "p50 ms", "p95 ms", "p99 ms", "failed", "mean batch")
    return TableData(f"{model}: the single-process server and the Ray Serve application", headers, tuple(rows))


def _overhead_table(servers: list[Server], runs: dict[tuple[str, int], LoadRun]) -> TableData:
    from easerve.bench.report import TableData

    base = runs.get((servers[0].label, 1))
    rows = []
    for server in servers:
        run = runs.get((server.label, 1))
        if run is None or base is None:
            continue
        p50, base_p50 = run.percentile_ms(50), base.percentile_ms(50)
        extra = _ms(p50 - base_p50) if p50 is not None and base_p50 is not None else "-"
        rows.append((server.label, _ms(p50), extra))
    return TableData(
        "one client: latency and what each server adds to easerve serve's",
        ("server", "p50 ms", "added ms"),
        tuple(rows),
    )


def _ms(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def _environment(threads: int) -> str:
    from importlib.metadata import PackageNotFoundError, version

    import onnxruntime

    try:
        ray_version = version("ray")
    except PackageNotFoundError:
        ray_version = "not installed"
    return (
        f"Measured {datetime.date.today().isoformat()} on {cpu_model()} ({platform.system()}), "
        f"onnxruntime {onnxruntime.__version__}, Ray {ray_version}, intra-op threads per runner {threads}; "
        f"clients and servers share the machine; load average before: {load_average()}"
    )


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m easerve.bench.serve_ray", description=__doc__.splitlines()[0])
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
