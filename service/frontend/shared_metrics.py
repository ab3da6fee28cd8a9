"""One `/metrics` over every process of `--http-workers`: prometheus_client's multiprocess mode.

Each process writes its samples to files in one directory (the model process the batch counters,
each worker its HTTP metrics); a worker's `/metrics` reads them all, so any worker shows the
model process's `nv_inference_count` / `nv_inference_exec_count` and the HTTP metrics summed
over the workers.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, multiprocess, values

DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def share_metrics(directory: str) -> None:
    """From now on, metrics created in this process write to `directory` (before
    `create_app`; processes started later inherit it through the environment)."""
    os.environ[DIRECTORY_VARIABLE] = directory
    # prometheus_client picks its value class at import; metrics made from now on use this one.
    values.ValueClass = values.get_value_class()


def shared_registry() -> CollectorRegistry:
    """A registry whose collection is every process's samples, aggregated."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def forget_process(pid: int) -> None:
    """A dead process's live gauges stop counting."""
    multiprocess.mark_process_dead(pid)
