"""Locust's CSV statistics, read back as one `RunStats` per run.

A run is one task's endpoint, one attention kind, a fixed number of users. Locust writes
`<prefix>_stats.csv` with one row per request name and an "Aggregated" row; percentiles are in
milliseconds ("N/A" when nothing completed).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

AGGREGATED_ROW = "Aggregated"


@dataclass(frozen=True)
class RunStats:
    """What one locust run measured, with what it ran against."""

    task: str
    attention: str
    users: int
    model: str
    requests: int
    failures: int
    requests_per_s: float
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    # The server's resident memory (its process tree) when the run began and at its highest
    # during it; None against a server not started here (`--host`).
    server_rss_start_mb: float | None = None
    server_rss_peak_mb: float | None = None


def _number(text: str) -> float:
    return math.nan if text in ("", "N/A") else float(text)


def aggregated_row(stats_csv: Path) -> dict[str, str]:
    """The "Aggregated" row of a locust `_stats.csv`; ValueError if the file has none."""
    with stats_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == AGGREGATED_ROW:
                return row
    raise ValueError(f"{stats_csv}: no {AGGREGATED_ROW!r} row; is it a locust _stats.csv?")


def read_run_stats(stats_csv: Path, task: str, attention: str, users: int, model: str) -> RunStats:
    """The run's totals and latency percentiles from locust's `_stats.csv`."""
    row = aggregated_row(stats_csv)
    return RunStats(
        task=task,
        attention=attention,
        users=users,
        model=model,
        requests=int(row["Request Count"]),
        failures=int(row["Failure Count"]),
        requests_per_s=_number(row["Requests/s"]),
        mean_ms=_number(row["Average Response Time"]),
        p50_ms=_number(row["50%"]),
        p95_ms=_number(row["95%"]),
        p99_ms=_number(row["99%"]),
    )


def save_runs(runs: list[RunStats], path: Path) -> None:
    path.write_text(json.dumps([asdict(run) for run in runs], indent=1) + "\n")


def load_runs(path: Path) -> list[RunStats]:
    """Runs saved by `save_runs`."""
    return [RunStats(**fields) for fields in json.loads(path.read_text())]
