"""One headless locust run as a subprocess: one endpoint's user class, one attention kind, a
fixed number of users, its CSV statistics read back."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from easerve.loadtest.server import MB, RssSampler
from easerve.loadtest.stats import RunStats, read_run_stats

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
# locust exits 1 when some requests failed: the run still measured something, and the report
# shows the failures.
MEASURED_EXIT_CODES = (0, 1)


@dataclass(frozen=True)
class RunPlan:
    """What one run sends: `users` closed-loop users of `user_class` asking for `model`, whose
    attention kind is `attention`."""

    task: str
    user_class: str
    attention: str
    model: str
    users: int
    duration: str  # locust's --run-time syntax: "60s", "2m"
    image_size: int | None


def locust_command(plan: RunPlan, host: str, csv_prefix: Path) -> list[str]:
    """The locust command line for `plan` against `host`, writing `<csv_prefix>_stats.csv`.

    All users start at once and the statistics are reset when they have, so ramp-up is not
    measured."""
    command = [
        sys.executable,
        "-m",
        "locust",
        "--locustfile",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--reset-stats",
        "--host",
        host,
        "--users",
        str(plan.users),
        "--spawn-rate",
        str(plan.users),
        "--run-time",
        plan.duration,
        "--csv",
        str(csv_prefix),
        "--attention",
        plan.attention,
        "--model",
        plan.model,
    ]
    if plan.image_size:
        command += ["--image-size", str(plan.image_size)]
    return [*command, plan.user_class]


def run_locust(plan: RunPlan, host: str, out_dir: Path, server_pid: int | None = None) -> RunStats:
    """Run `plan` against `host`, keep locust's CSVs and log in `out_dir`, return the measured
    statistics, with the server's memory over the run when its process (`server_pid`, on this
    machine) is known. RuntimeError if locust did not complete."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / f"{plan.task}-{plan.attention}-u{plan.users}"
    log = prefix.with_name(prefix.name + ".log")
    memory = RssSampler(server_pid, cap_mb=0) if server_pid is not None else None
    start_bytes = memory.sample() if memory is not None else 0
    if memory is not None:
        memory.start()
    try:
        with log.open("w") as handle:
            result = subprocess.run(locust_command(plan, host, prefix), stdout=handle, stderr=subprocess.STDOUT)
    finally:
        if memory is not None:
            memory.stop()
    stats_csv = prefix.with_name(prefix.name + "_stats.csv")
    if result.returncode not in MEASURED_EXIT_CODES or not stats_csv.exists():
        raise RuntimeError(f"locust exited {result.returncode} for {prefix.name}; see {log}")
    stats = read_run_stats(stats_csv, plan.task, plan.attention, plan.users, plan.model)
    if memory is None:
        return stats
    return dataclasses.replace(stats, server_rss_start_mb=start_bytes / MB, server_rss_peak_mb=memory.peak_mb)
