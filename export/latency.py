"""Wall-clock timing of a repeated call: what export's speed-up figures and the backend benchmark
both measure."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the timed repeats."""

    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def p95(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def time_calls(call: Callable[[], object], warmup: int = 2, min_repeats: int = 5, budget_s: float = 1.0) -> Timing:
    """Call `warmup` times untimed, then time at least `min_repeats` calls, and keep timing until
    `budget_s` seconds of timed calls are spent."""
    for _ in range(warmup):
        call()
    seconds: list[float] = []
    while len(seconds) < min_repeats or sum(seconds) < budget_s:
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return Timing(tuple(seconds))
