"""`easerve loadtest`: locust against the service, EA next to self-attention, with a report.

    easerve loadtest --compare ea sa --tasks segment --image-size 512 --users 1,8,32 --duration 60s

For every task, user count and attention kind, one headless locust run (`loadtest.locust_run`)
against the server at --host, or against one started on loopback for the test; then a markdown
table and plots under --out (`loadtest.report`). A server started here with --image-size serves
the models that take any image size at that size (`loadtest.resized_models`), so that a 512x512
run measures the network at 512x512.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from easerve.loadtest.endpoints import ENDPOINTS, user_class  # light: no numpy until requests are prepared


def _user_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"user counts must be positive, got {text!r}")
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--compare",
        nargs="+",
        choices=["ea", "sa"],
        default=["ea", "sa"],
        metavar="KIND",
        help="attention kinds to compare (default: ea sa)",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=list(ENDPOINTS),
        default=list(ENDPOINTS),
        metavar="TASK",
        help=f"endpoints to load (default: all of {', '.join(ENDPOINTS)})",
    )
    parser.add_argument(
        "--users",
        type=_user_counts,
        default=[1, 8, 32, 64],
        help="concurrent users, comma-separated (default: 1,8,32,64)",
    )
    parser.add_argument("--duration", default="60s", help="locust run time per run (default: 60s)")
    parser.add_argument("--host", help="base URL of a running server (default: start one on 127.0.0.1)")
    parser.add_argument(
        "--image-size",
        type=int,
        metavar="N",
        help="send images stretched to N x N, and serve the models that take any size at "
        "N x N when no --host is given (default: the samples' own 64 / 128 pixels)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("results/loadtest"), help="report folder (default: results/loadtest)"
    )
    parser.add_argument(
        "--ready-timeout", type=float, default=300.0, help="seconds to wait for the server to be ready (default: 300)"
    )


def _model_for(models: list, manifest_task: str, attention: str) -> str:
    names = sorted(model.name for model in models if model.task == manifest_task and model.attention == attention)
    if not names:
        raise SystemExit(f"the server serves no {attention} model for {manifest_task}")
    return names[0]


def _run_all(args: argparse.Namespace, url: str, server_pid: int | None = None) -> int:
    from easerve.loadtest.locust_run import RunPlan, run_locust
    from easerve.loadtest.report import ReportContext, machine_description, runs_table, write_report
    from easerve.loadtest.server import served_models, wait_ready

    wait_ready(url, args.ready_timeout)
    models = served_models(url)
    plans = [
        RunPlan(
            task,
            user_class(ENDPOINTS[task]),
            kind,
            _model_for(models, ENDPOINTS[task].name, kind),
            users,
            args.duration,
            args.image_size,
        )
        for task in args.tasks
        for users in args.users
        for kind in args.compare  # kinds interleaved, so drift on the machine hits both alike
    ]
    runs = []
    for number, plan in enumerate(plans, 1):
        run = run_locust(plan, url, args.out / "locust", server_pid)
        runs.append(run)
        print(
            f"[{number}/{len(plans)}] {plan.task} {plan.model} users={plan.users}: "
            f"{run.requests_per_s:.1f} req/s, p50 {run.p50_ms:.0f} ms, p95 {run.p95_ms:.0f} ms, "
            f"{run.failures}/{run.requests} failed",
            flush=True,
        )
    used = [model for model in models if model.name in {run.model for run in runs}]
    context = ReportContext(
        date=datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
        machine=machine_description(),
        backend=", ".join(sorted({model.backend for model in used})),
        model_inputs={model.name: model.input_size for model in used},
        host=url if args.host else f"{url} (started for the test)",
        duration=args.duration,
        image_size=args.image_size,
    )
    report = write_report(runs, context, args.out)
    print(runs_table(runs))
    print(f"report: {report}")
    return 1 if any(run.failures for run in runs) else 0


@contextmanager
def _weights_dirs(image_size: int | None) -> Iterator[list[Path] | None]:
    """The weights directories of a server started here: None (its default) without
    `image_size`, else a temporary folder of the models resized to it before the defaults."""
    if not image_size:
        yield None
        return
    from easerve.loadtest.resized_models import write_resized_models
    from easerve.service.settings import Settings

    defaults = list(Settings().weights_dirs)
    with tempfile.TemporaryDirectory(prefix="easerve-loadtest-") as folder:
        names = write_resized_models(defaults, image_size, Path(folder))
        print(f"served at {image_size}x{image_size}: {', '.join(names) or 'none'}", flush=True)
        yield [Path(folder), *defaults]


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every run completed without failed requests, 1 when some requests failed."""
    if args.host:
        return _run_all(args, args.host.rstrip("/"))
    from easerve.loadtest.server import local_server

    print("starting a server on 127.0.0.1", flush=True)
    with _weights_dirs(args.image_size) as weights_dirs:
        with local_server(args.out / "server.log", args.ready_timeout, weights_dirs) as server:
            return _run_all(args, server.url, server.process.pid)
