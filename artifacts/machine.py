"""What a benchmark ran on: the CPU model and the machine's load, for the reports' environment
lines (figures from a shared machine say so)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# The vector extensions that decide which kernels torch and onnxruntime run (VNNI: fast INT8
# dot products). Machines sold under one model name ("AMD EPYC") differ here, and so do their
# figures.
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_model() -> str:
    """ "<model name> (<vector extensions>), <n> CPUs" from /proc/cpuinfo, else what `platform`
    knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return platform.processor() or platform.machine()
    return f"{describe_cpu(cpuinfo.read_text())}, {os.cpu_count()} CPUs"


def describe_cpu(cpuinfo: str) -> str:
    """ "<model name> (<vector extensions>)" of the first processor in /proc/cpuinfo text."""
    name, flags = platform.machine(), ""
    for line in cpuinfo.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            name = value.strip()
        elif key.strip() == "flags":
            flags = value
    present = set(flags.split())
    return f"{name} ({'/'.join(flag for flag in VECTOR_FLAGS if flag in present) or 'no AVX2'})"


def load_average() -> str:
    """The 1 / 5 / 15 minute load averages."""
    return " / ".join(f"{load:.2f}" for load in os.getloadavg())
