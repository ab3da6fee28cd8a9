"""What a benchmark ran on: the CPU model and the machine's load, for the reports' environment
lines (figures from a shared machine say so)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """"<model name>, <n> CPUs" from /proc/cpuinfo, else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1 / 5 / 15 minute load averages."""
    return " / ".join(f"{load:.2f}" for load in os.getloadavg())
