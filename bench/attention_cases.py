"""The modules `easerve bench attention` compares, and how one of them is counted and measured.

Run as `python -m easerve.bench.attention_cases`, it measures one `Case` read as JSON from stdin and
writes the `Measurement` as JSON to stdout: every case runs in a fresh process, so the peak memory
it reports belongs to that case alone (no allocator reuse from an earlier, larger case).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from easerve.model_defs.attention import (
    AttentionBlock2d,
    ExternalAttention,
    FeatureMapAttention,
    SelfAttention,
)

# (dim, memory_size) -> a module mapping a (B, dim, H, W) feature map to the same shape
ModuleBuilder = Callable[[int, int], nn.Module]

# key -> (table label, builder): the SA unit (single head, d x d Q, K, V, O), the EA unit (M_k,
# M_v) and the official EA block (1x1 convs + EA + BatchNorm + residual).
COMPARED_MODULES: dict[str, tuple[str, ModuleBuilder]] = {
    "sa": ("SA unit", lambda dim, _: FeatureMapAttention(SelfAttention(dim))),
    "ea": (
        "EA unit",
        lambda dim, memory: FeatureMapAttention(ExternalAttention(dim, memory, tie_memories=True)),
    ),
    "ea-block": ("EA block", lambda dim, memory: AttentionBlock2d(dim, "ea", memory)),
}

_MAX_REPEATS = 200


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int


def count_cost(module: str, dim: int, side: int, memory_size: int) -> Cost:
    """Parameters and multiply-accumulates of `module` on one 1 x dim x side x side feature map.

    Built and run on the meta device, so the paper-size setting costs no time or memory. MACs are
    `FlopCounterMode` flops / 2: matrix products and convolutions; the normalisations
    (softmax, L1, BatchNorm) are not counted, as in the paper.
    """
    _, build = COMPARED_MODULES[module]
    with torch.device("meta"):
        model = build(dim, memory_size).eval()
        feature_map = torch.empty(1, dim, side, side)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(feature_map)
    return Cost(sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2)


@dataclass(frozen=True)
class Case:
    """One measurement: `module` on a 1 x dim x side x side map, side = sqrt(positions)."""

    module: str
    dim: int
    positions: int
    memory_size: int
    device: str
    min_repeats: int
    time_budget_s: float
    warmup_s: float
    threads: int  # torch intra-op threads; 0 keeps torch's default

    @property
    def side(self) -> int:
        return square_side(self.positions)


@dataclass(frozen=True)
class Measurement:
    case: Case
    times_ms: tuple[float, ...]
    # Peak memory of the first forward above what was held before it (see `_peak_memory_bytes`).
    peak_memory_bytes: int


def square_side(positions: int) -> int:
    """The side of the square feature map with `positions` positions; ValueError if none."""
    side = round(positions**0.5)
    if positions < 1 or side * side != positions:
        raise ValueError(f"{positions} positions is not a square feature map (N = H * W, H = W)")
    return side


def measure_in_fresh_process(case: Case) -> Measurement:
    """`measure(case)` in a new Python process; RuntimeError with its stderr if it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "easerve.bench.attention_cases"],
        input=json.dumps(asdict(case)),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
        raise RuntimeError(f"{case.module} at N={case.positions} failed: {reason[0]}")
    payload = json.loads(result.stdout)
    return Measurement(
        case=case,
        times_ms=tuple(payload["times_ms"]),
        peak_memory_bytes=payload["peak_memory_bytes"],
    )


def measure(case: Case) -> Measurement:
    """Peak memory of the first forward at this size, then latencies after warm-up.

    Forwards run in inference mode. The first forward at this size is also the first warm-up;
    more follow until `warmup_s` has passed. Timed forwards then repeat at least `min_repeats`
    times and until `time_budget_s` is spent.
    """
    torch.manual_seed(0)
    if case.threads:
        torch.set_num_threads(case.threads)
    device = torch.device(case.device)
    _, build = COMPARED_MODULES[case.module]
    model = build(case.dim, case.memory_size).eval().to(device)
    feature_map = torch.randn(1, case.dim, case.side, case.side, device=device)

    def forward() -> float:
        _synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode():
            model(feature_map)
        _synchronize(device)
        return time.perf_counter() - start

    # One-time initialisation (thread pool, kernel selection) happens on a 2 x 2 map first, so
    # the peak below belongs to this N only.
    with torch.inference_mode():
        model(torch.randn(1, case.dim, 2, 2, device=device))
    peak_memory_bytes, first_s = _peak_memory_bytes(forward, device)
    warmup_s = first_s
    while warmup_s < case.warmup_s:
        warmup_s += forward()
    return Measurement(case, _timed_ms(forward, case), peak_memory_bytes)


def _timed_ms(forward: Callable[[], float], case: Case) -> tuple[float, ...]:
    times: list[float] = []
    while len(times) < _MAX_REPEATS and (len(times) < case.min_repeats or sum(times) < case.time_budget_s):
        times.append(forward())
    return tuple(t * 1e3 for t in times)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_bytes(forward: Callable[[], float], device: torch.device) -> tuple[int, float]:
    """(peak bytes above the level before `forward`, its duration in seconds).

    CUDA: the caching allocator's peak of allocated bytes. CPU: the process's resident-set
    high-water mark (VmHWM, reset through /proc/self/clear_refs), so it counts every page the
    forward touched, inside torch's allocator or not (oneDNN scratch, thread buffers): what the
    OS, and an OOM killer, see. Linux only.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        seconds = forward()
        return torch.cuda.max_memory_allocated(device) - before, seconds
    Path("/proc/self/clear_refs").write_text("5")
    before = _proc_status_bytes("VmRSS")
    seconds = forward()
    return _proc_status_bytes("VmHWM") - before, seconds


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _measure_case_from_stdin() -> int:
    measurement = measure(Case(**json.load(sys.stdin)))
    payload = asdict(measurement)
    del payload["case"]
    json.dump(payload, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(_measure_case_from_stdin())
