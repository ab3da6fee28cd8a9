"""`easerve bench serve`: what the service's dynamic batching buys, measured on loopback.

For a classification and a segmentation model (default: the EA ones found), three servers are
started on 127.0.0.1 in turn and loaded by closed-loop clients at each --concurrency: easerve
with dynamic batching, easerve with max batch 1 (the same server, batching off), and a naive
FastAPI + onnxruntime server (`bench.serve_naive`), in each --transports (how the image is sent:
raw body, multipart/form-data, JSON base64); each run also reads the server's CPU time per request.
With --http-workers N (besides 1), easerve with dynamic batching is also measured behind N HTTP
worker processes (`easerve serve --http-workers N`), right after the one-process server, and the
report sets the two side by side (throughput and mean batch at the highest concurrency).
With --peers, LitServe and/or Triton Inference Server (via PyTriton) serve the same ONNX models
with the same work per image (`bench.serve_peers`), in the JSON transport (added to the
transports when not asked), and the report sets easerve beside them. Beside them, measured in
this process before any server starts (`bench.serve_offline`): the offline ceiling, the bare
model and the bare pipeline of one request. Writes OUT/bench_serve.md and OUT/bench_serve.png.

Only the standard library is imported at module level (see easerve/cli.py).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from easerve.artifacts.machine import cpu_model, load_average
from easerve.artifacts.tasks import CLASSIFICATION, SEGMENTATION
from easerve.bench.arguments import add_weights_dirs, chosen_models, ea_model_of_each_task, serve_command, weights_flags
from easerve.bench.serve_peers import DEFAULT_PEERS_PYTHON, PEER_TRANSPORT, PEERS, missing

if TYPE_CHECKING:
    from easerve.bench.serve_report import ModelResults
    from easerve.loadtest.server import RunningServer
    from easerve.service.model_files import ModelFiles

DEFAULT_CONCURRENCY = (1, 8, 32, 64)
DEFAULT_TASKS = (CLASSIFICATION.name, SEGMENTATION.name)
# Kept here (not imported from bench.serve_load, which needs aiohttp) for the argument parser;
# tests/service/test_service_bench.py checks they match serve_load.TRANSPORTS.
TRANSPORT_CHOICES = ("raw", "multipart", "json")
DEFAULT_TRANSPORTS = ("raw",)
DEFAULT_HTTP_WORKERS = (1,)
PEER_CHOICES = tuple(PEERS)
REPORT_NAME = "bench_serve"

METHOD = """\
Every server runs in its own process on 127.0.0.1 with the same models and onnxruntime thread
settings; the load comes from this process (asyncio + aiohttp, one keep-alive connection per
client), on the same machine. Each client sends a real image from the generated data sets (the
load test's samples: a 64x64 shape for classification, a 128x128 scene for segmentation) and
sends the next request as soon as the answer arrives. Transports (--transports): "raw", the PNG
as the body (image/png); "multipart", a multipart/form-data body with the PNG as its one file
part (fixed boundary); "json", application/json {"image": "<base64 of the PNG>"}. Each body is
built once per model and transport, before its runs, so every request costs the client the same.
After --warmup seconds, the requests answered inside the next --duration seconds count:
throughput is those answered 200 per second, latency is send to answer. Mean batch: images per
executed batch over the window, from the service's `nv_inference_count` /
`nv_inference_exec_count`. Server CPU ms/req: the CPU time (user + system) of the server's
process tree (the server process, its live descendants and those it has waited for), read from
the OS at the start and the end of the same window, over the requests answered 200 in that
window: the server's whole cost per request, its idle threads and the two /metrics reads per
window included, independent of how many cores the machine has (not of their speed); the
clients' CPU is not in it. Servers: easerve (dynamic
batching, max queue delay 0, --instances model instances, one HTTP process; with --http-workers,
once more per other N behind N HTTP worker processes, `easerve serve --http-workers N`, its CPU
that of the model process and its workers), easerve with `--max-batch-size 1` (the same
instances, one HTTP process), and a naive FastAPI server running each request on the thread pool, at
batch 1, on one shared onnxruntime session (`bench/serve_naive.py`); all of them read the same
three transports with the service's own code and do the service's own decoding, pre- and
post-processing. Offline ceiling: as many runners as easerve has model instances, each on full
batches (the manifest's max batch size) on its own thread, images per second; bare model: median
runner call at batch 1; bare pipeline: median of decode, preprocess, run and postprocess of one
image in process; overhead: the service's p50 with one client minus the bare pipeline (HTTP,
body parsing, routing, queueing and thread hand-offs)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_weights_dirs(parser)
    parser.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        help="image models to measure (classification, segmentation, detection, instance segmentation; "
        "default: the EA classification and segmentation ones)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=list(DEFAULT_CONCURRENCY),
        metavar="N",
        help="concurrent clients, one run each (default: %(default)s)",
    )
    parser.add_argument(
        "--transports",
        nargs="+",
        choices=TRANSPORT_CHOICES,
        default=list(DEFAULT_TRANSPORTS),
        metavar="KIND",
        help="how the image is sent, one set of runs each: raw (the PNG as the body), multipart "
        '(a multipart/form-data file), json ({"image": base64}) (default: %(default)s)',
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=8.0,
        metavar="SECONDS",
        help="measured window of each run; each offline figure takes a quarter of it (default: %(default)s)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="load before each window that is not counted (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="onnxruntime intra-op threads in every server and offline, 0 for its default (default: %(default)s)",
    )
    parser.add_argument(
        "--spinning",
        action="store_true",
        help="idle onnxruntime threads spin for work in every server and offline (`easerve serve --intra-op-spinning`)",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        metavar="N",
        help="model instances of both easerve servers (`easerve serve --instances`; default: %(default)s)",
    )
    parser.add_argument(
        "--http-workers",
        type=int,
        nargs="+",
        default=list(DEFAULT_HTTP_WORKERS),
        metavar="N",
        help="HTTP worker processes of easerve with dynamic batching (`easerve serve --http-workers`): "
        "one server each, measured side by side, 1 always (max batch 1 keeps 1; default: %(default)s)",
    )
    parser.add_argument(
        "--peers",
        nargs="*",
        choices=PEER_CHOICES,
        default=[],
        metavar="PEER",
        help=f"also measure these servers of the same models, in the JSON transport: {', '.join(PEER_CHOICES)} "
        "(run from --peers-python; default: none)",
    )
    parser.add_argument(
        "--peers-python",
        type=Path,
        default=DEFAULT_PEERS_PYTHON,
        metavar="PATH",
        help="the Python with the peers installed (`make peers` builds it; default: %(default)s)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long a server may take to become ready (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results"),
        metavar="DIR",
        help=f"writes DIR/{REPORT_NAME}.md and DIR/{REPORT_NAME}.png (default: %(default)s)",
    )
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 done, 1 a server failed (or a target missed under --strict), 2 bad input."""
    from easerve.bench import serve_report as report
    from easerve.bench.report import write_report

    models = chosen_models(args, _chosen_models)
    if models is None:
        return 2
    if (
        min(args.concurrency) < 1
        or min(args.http_workers) < 1
        or args.duration <= 0
        or args.warmup < 0
        or args.instances < 1
    ):
        print("error: --concurrency, --instances and --http-workers must be >= 1, --duration > 0 and --warmup >= 0")
        return 2
    args.http_workers = report.worker_counts(args.http_workers)
    peers_note = _choose_peers(args)
    environment_before = _environment(args.threads, args.instances, args.spinning, args.http_workers)
    environment_before += peers_note
    try:
        results = _measure(args, models)
    except RuntimeError as error:
        print(f"error: {error}")
        return 1
    environment = f"{environment_before}; load average after: {load_average()}."
    tables = [*(report.load_table(model) for model in results), report.yardstick_table(results)]
    for extra in (report.http_workers_table(results), report.peers_table(results)):
        if extra is not None:
            tables.append(extra)
    targets = report.target_checks(results)
    report.show(tables, targets)
    print(environment)

    args.out.mkdir(parents=True, exist_ok=True)
    markdown_path, plot_path = args.out / f"{REPORT_NAME}.md", args.out / f"{REPORT_NAME}.png"
    write_report(markdown_path, "serve", environment, tables, report.target_lines(targets), METHOD, plot_path.name)
    report.plot(results, plot_path)
    print(f"wrote {markdown_path} and {plot_path}")
    missed = any(target.met is False for target in targets)
    return 1 if args.strict and missed else 0


def _choose_peers(args: argparse.Namespace) -> str:
    """Keep in `args.peers` those the peers' Python can run (JSON then among the transports);
    the environment's note of which ran and why the others did not."""
    asked = list(dict.fromkeys(args.peers))
    reasons = {key: missing(PEERS[key], args.peers_python) for key in asked}
    args.peers = [key for key in asked if reasons[key] is None]
    for key, reason in reasons.items():
        if reason is not None:
            print(f"peer {key} left out: {reason}", flush=True)
    if args.peers and PEER_TRANSPORT not in args.transports:
        args.transports = [*args.transports, PEER_TRANSPORT]
    if not asked:
        return ""
    ran = ", ".join(args.peers) or "none"
    left = "; ".join(f"{key}: {reason}" for key, reason in reasons.items() if reason is not None)
    return f"; peers measured: {ran}" + (f" (left out: {left})" if left else "")


def _chosen_models(weights_dirs: list[Path], names: list[str] | None) -> list[ModelFiles]:
    """The named image models, or the first EA model of each default task; ModelFilesError if
    one is missing or of a task the benchmark does not send images for."""
    from easerve.bench.serve_pipeline import IMAGE_TASKS
    from easerve.service.model_files import ModelFilesError, discover_models

    if names:
        chosen = discover_models(weights_dirs, names)
    else:
        chosen = ea_model_of_each_task(weights_dirs, DEFAULT_TASKS)
        missing = set(DEFAULT_TASKS) - {files.manifest.task for files in chosen}
        if missing:
            raise ModelFilesError(f"no EA {', '.join(sorted(missing))} model in {', '.join(map(str, weights_dirs))}")
    for files in chosen:
        if files.manifest.task not in IMAGE_TASKS:
            raise ModelFilesError(f"{files.name} is a {files.manifest.task} model; measured: {', '.join(IMAGE_TASKS)}")
    return chosen


def _measure(args: argparse.Namespace, models: list[ModelFiles]) -> list[ModelResults]:
    from easerve.bench.serve_load import LoadRun, Workload, image_workload, run_load
    from easerve.bench.serve_offline import measure_offline
    from easerve.bench.serve_pipeline import IMAGE_TASKS
    from easerve.bench.serve_report import ModelResults, server_labels
    from easerve.service.settings import Settings

    settings = Settings(weights_dirs=args.weights_dirs, intra_op_threads=args.threads, intra_op_spinning=args.spinning)
    pngs = {files.name: IMAGE_TASKS[files.manifest.task].sample_png() for files in models}
    offline = {}
    for files in models:
        print(f"offline: {files.name}", flush=True)
        offline[files.name] = measure_offline(files, settings, pngs[files.name], args.duration / 4, args.instances)
    transports = list(dict.fromkeys(args.transports))
    # Every body built once, here, before any run: the clients only send these bytes.
    workloads = {
        (files.name, transport): image_workload(
            IMAGE_TASKS[files.manifest.task].route, files.name, pngs[files.name], transport
        )
        for files in models
        for transport in transports
    }
    for peer in args.peers:
        for files in models:
            route = PEERS[peer].route.format(model=files.name)
            body = PEERS[peer].request_body(pngs[files.name], workloads[files.name, PEER_TRANSPORT].body)
            workloads[files.name, peer] = Workload(route, files.name, body, "application/json")
    runs: dict[str, dict[tuple[str, str], list[LoadRun]]] = {files.name: {} for files in models}
    for server, label in server_labels(args.http_workers, args.peers).items():
        with _running_server(server, args, [files.name for files in models]) as running:
            for files in models:
                for transport in [PEER_TRANSPORT] if server in PEERS else transports:
                    key = (server, transport)
                    runs[files.name][key] = []
                    for concurrency in args.concurrency:
                        run = run_load(
                            running.url,
                            workloads[files.name, server if server in PEERS else transport],
                            concurrency,
                            args.warmup,
                            args.duration,
                            server_pid=running.pid,
                        )
                        runs[files.name][key].append(run)
                        cpu = run.server_cpu_ms_per_request
                        print(
                            f"{label}: {files.name}, {transport}, {concurrency} clients: "
                            f"{run.throughput:,.1f} req/s, p50 {run.percentile_ms(50) or 0:.1f} ms, "
                            f"server CPU {'-' if cpu is None else f'{cpu:.2f}'} ms/req, {run.failures} failed",
                            flush=True,
                        )
    return [ModelResults(f.name, f.manifest.task, offline[f.name], runs[f.name]) for f in models]


def _server_command(server: str, args: argparse.Namespace, names: list[str], port: int) -> list[str]:
    from easerve.bench.serve_report import BATCH1, NAIVE, http_workers_of

    weights = weights_flags(args.weights_dirs)
    if server in PEERS:
        return PEERS[server].command(args.peers_python, names, port, args.threads, weights)
    if server == NAIVE:
        spinning = ["--spinning"] if args.spinning else []
        return [
            sys.executable,
            "-m",
            "easerve.bench.serve_naive",
            "--port",
            str(port),
            "--models",
            *names,
            "--threads",
            str(args.threads),
            *spinning,
            *weights,
        ]
    spinning = ["--intra-op-spinning"] if args.spinning else []
    batching = ["--max-batch-size", "1"] if server == BATCH1 else []
    workers = http_workers_of(server)
    http_workers = ["--http-workers", str(workers)] if workers > 1 else []
    flags = ["--port", str(port), "--intra-op-threads", str(args.threads), *spinning]
    flags += ["--instances", str(args.instances), *batching, *http_workers]
    return serve_command(args.weights_dirs, tuple(names), flags)


@contextmanager
def _running_server(server: str, args: argparse.Namespace, names: list[str]) -> Iterator[RunningServer]:
    """`server` on a free loopback port (`loadtest.server.running_server_process`), its output in
    a log file under the temp folder; yields its URL and process once ready."""
    from easerve.loadtest.server import READY_PATH, free_port, running_server_process

    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="easerve-bench-serve-")) / f"{server}.log"
    ready_path = PEERS[server].ready_path.format(model=names[-1]) if server in PEERS else READY_PATH
    command = _server_command(server, args, names, port)
    url = f"http://127.0.0.1:{port}"
    with running_server_process(command, url, log_path, args.ready_timeout, ready_path=ready_path) as running:
        yield running


def _environment(threads: int, instances: int, spinning: bool, http_workers: list[int]) -> str:
    import onnxruntime

    return (
        f"Measured {datetime.date.today().isoformat()} on {cpu_model()} "
        f"({platform.system()}), onnxruntime {onnxruntime.__version__} "
        f"({', '.join(onnxruntime.get_available_providers())}), intra-op threads {threads or 'default'} "
        f"({'spinning' if spinning else 'not spinning'} when idle), easerve model instances {instances}, "
        f"easerve HTTP workers {' and '.join(map(str, http_workers))} (dynamic batching; max batch 1: 1); "
        f"clients and servers share the machine; load average before: {load_average()}"
    )
