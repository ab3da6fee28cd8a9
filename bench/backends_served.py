"""The served path of `easerve bench backends`: each variant a model's export kept (fp32, int8,
fp16), served by `easerve serve --precision <variant>` and measured under closed-loop load on its
task endpoint, so the offline speed of a graph can be read beside what the service makes of it.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from easerve.artifacts.manifest import load_manifest
from easerve.artifacts.tasks import TaskName, task_spec
from easerve.bench.report import TableData
from easerve.bench.serve_load import LoadRun, Workload, run_load
from easerve.loadtest.endpoints import prepared_requests
from easerve.loadtest.samples import load_samples
from easerve.loadtest.server import free_port, running_server

READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ServedFigures:
    model: str
    variant: str
    run: LoadRun


def workload(task: TaskName, model: str) -> Workload:
    """A real request of the model's task: the load test's first, clouds as `.npy`."""
    request = prepared_requests(task_spec(task).endpoint, load_samples(), {}, clouds_as_npy=True)[0]
    return Workload(request.path, model, request.body, request.content_type)


def _serve_command(folder: Path, variant: str, threads: int, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "easerve.cli",
        "serve",
        "--port",
        str(port),
        "--weights-dir",
        str(folder.parent),
        "--models",
        folder.name,
        "--precision",
        variant,
        "--intra-op-threads",
        str(threads),
        "--log-level",
        "warning",
    ]


def measure_served(
    folders: list[Path], threads: int, concurrency: int, warmup_s: float, duration_s: float, log: Callable[[str], None]
) -> list[ServedFigures]:
    """Every kept variant of every model in `folders`, served alone and loaded by `concurrency`
    closed-loop clients for `duration_s` after `warmup_s`."""
    figures = []
    logs = Path(tempfile.mkdtemp(prefix="easerve-bench-backends-"))
    for folder in folders:
        manifest = load_manifest(folder)
        for variant in (v.name for v in manifest.variants() if v.within_gate):
            port = free_port()
            command = _serve_command(folder, variant, threads, port)
            log_path = logs / f"{manifest.name}-{variant}.log"
            with running_server(command, f"http://127.0.0.1:{port}", log_path, READY_TIMEOUT_S) as url:
                run = run_load(url, workload(manifest.task, manifest.name), concurrency, warmup_s, duration_s)
            log(
                f"served {manifest.name} {variant}: {run.throughput:,.1f} req/s at {concurrency} clients, "
                f"p50 {run.percentile_ms(50) or 0:.1f} ms, {run.failures} failed"
            )
            figures.append(ServedFigures(manifest.name, variant, run))
    return figures


def served_table(figures: list[ServedFigures], concurrency: int) -> TableData:
    """Throughput and latency per model and variant, with each variant's ratio to FP32."""
    fp32 = {f.model: f.run.throughput for f in figures if f.variant == "fp32"}
    rows = []
    for f in figures:
        reference = fp32.get(f.model)
        ratio = f"{f.run.throughput / reference:.2f}x" if reference else "-"
        p50, p95 = f.run.percentile_ms(50), f.run.percentile_ms(95)
        rows.append(
            (
                f.model,
                f.variant,
                f"{f.run.throughput:,.1f}",
                ratio,
                "-" if p50 is None else f"{p50:.1f}",
                "-" if p95 is None else f"{p95:.1f}",
                "-" if f.run.mean_batch_size is None else f"{f.run.mean_batch_size:.1f}",
                str(f.run.failures),
            )
        )
    headers = ("model", "variant", "req/s", "vs fp32", "p50 ms", "p95 ms", "mean batch", "failed")
    return TableData(f"Served path: easerve serve --precision <variant>, {concurrency} clients", headers, tuple(rows))
