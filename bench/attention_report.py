"""What `easerve bench attention` found, as tables, target checks, markdown and a log-log plot.

Each table is built once as `bench.report.TableData` and rendered to the console and to markdown.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from easerve.bench.attention_cases import COMPARED_MODULES, Cost, Measurement
from easerve.bench.report import TableData

# The paper's cost comparison (Guo et al. 2021), re-counted from the official code at 1 x 512 x 128 x 128, S = 64.
PAPER_COSTS: dict[str, Cost] = {
    "sa": Cost(params=1_048_576, macs=292_060_000_000),
    "ea": Cost(params=65_536, macs=1_070_000_000),
    "ea-block": Cost(params=591_360, macs=9_660_000_000),
}
MIN_SA_OVER_EA_LATENCY = 20.0
MAX_EA_GROWTH = 24.0
GROWTH_FROM, GROWTH_TO = 1024, 16384


@dataclass(frozen=True)
class TargetCheck:
    description: str
    value: float | None  # None: the positions it needs were not measured
    met: bool | None


def median_ms(measurement: Measurement) -> float:
    return statistics.median(measurement.times_ms)


def p90_ms(measurement: Measurement) -> float:
    """90th percentile of the timed forwards (interpolated; the maximum below ten samples)."""
    times = measurement.times_ms
    if len(times) < 2:
        return times[0]
    return statistics.quantiles(times, n=10, method="inclusive")[-1]


def cost_table(costs: dict[str, Cost], setting: str) -> TableData:
    """Counted params and MACs beside the paper's figures (`PAPER_COSTS`), one row per compared module."""
    rows = tuple(
        (
            COMPARED_MODULES[key][0],
            f"{cost.params:,}",
            f"{cost.macs / 1e9:.2f}",
            f"{PAPER_COSTS[key].params:,}",
            f"{PAPER_COSTS[key].macs / 1e9:.2f}",
        )
        for key, cost in costs.items()
    )
    headers = ("module", "params", "GMACs", "paper params", "paper GMACs")
    return TableData(f"Cost at the paper's setting, {setting}", headers, rows)


def latency_table(measurements: dict[int, dict[str, Measurement]], dim: int, device: str) -> TableData:
    """Per N: median / p90 forward latency of every module, and the SA/EA ratio of medians."""
    rows = tuple(
        (
            f"{positions:,}",
            *(f"{_ms(median_ms(by_module[k]))} / {_ms(p90_ms(by_module[k]))}" for k in COMPARED_MODULES),
            _ratio(median_ms(by_module["sa"]), median_ms(by_module["ea"])),
        )
        for positions, by_module in measurements.items()
    )
    title = f"Latency on {device}, ms (median / p90), d = {dim}"
    return TableData(title, _per_module_headers(), rows)


def memory_table(measurements: dict[int, dict[str, Measurement]], dim: int, device: str) -> TableData:
    """Per N: peak memory of one forward of every module, and the SA/EA ratio."""
    rows = tuple(
        (
            f"{positions:,}",
            *(f"{by_module[k].peak_memory_bytes / 2**20:,.1f}" for k in COMPARED_MODULES),
            _ratio(by_module["sa"].peak_memory_bytes, by_module["ea"].peak_memory_bytes),
        )
        for positions, by_module in measurements.items()
    )
    return TableData(f"Peak memory on {device}, MiB, d = {dim}", _per_module_headers(), rows)


def _per_module_headers() -> tuple[str, ...]:
    return ("N", *(label for label, _ in COMPARED_MODULES.values()), "SA/EA")


def target_checks(measurements: dict[int, dict[str, Measurement]]) -> list[TargetCheck]:
    """The two targets: SA/EA latency at N=16384, EA's time growth from 1024 to 16384 (docs/benchmarks.md)."""
    ratio_text = f"SA/EA latency at N={GROWTH_TO:,} (target >= {MIN_SA_OVER_EA_LATENCY:.0f}x)"
    growth_text = (
        f"EA unit time growth N={GROWTH_FROM:,} -> {GROWTH_TO:,} "
        f"(target <= {MAX_EA_GROWTH:.0f}x; linear is {GROWTH_TO // GROWTH_FROM}x)"
    )
    if GROWTH_TO not in measurements:
        return [TargetCheck(ratio_text, None, None), TargetCheck(growth_text, None, None)]
    largest = measurements[GROWTH_TO]
    ratio = median_ms(largest["sa"]) / median_ms(largest["ea"])
    checks = [TargetCheck(ratio_text, ratio, ratio >= MIN_SA_OVER_EA_LATENCY)]
    if GROWTH_FROM not in measurements:
        return [*checks, TargetCheck(growth_text, None, None)]
    growth = median_ms(largest["ea"]) / median_ms(measurements[GROWTH_FROM]["ea"])
    return [*checks, TargetCheck(growth_text, growth, growth <= MAX_EA_GROWTH)]


def target_lines(checks: list[TargetCheck]) -> list[str]:
    verdicts = {True: "met", False: "MISSED", None: "not checked"}
    return [
        f"{c.description}: {'not measured' if c.value is None else f'{c.value:.1f}x'} - {verdicts[c.met]}"
        for c in checks
    ]


def plot(measurements: dict[int, dict[str, Measurement]], path: Path, title: str) -> None:
    """Log-log latency and peak memory against N, with N and N^2 guide lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions = list(measurements)
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.5))
    for key, (label, _) in COMPARED_MODULES.items():
        time_axis.plot(positions, [median_ms(measurements[n][key]) for n in positions], "o-", label=label)
        memory_axis.plot(
            positions,
            [max(measurements[n][key].peak_memory_bytes, 1) / 2**20 for n in positions],
            "o-",
            label=label,
        )
    # Guides through the first EA and SA points: linear and quadratic growth in N.
    first = positions[0]
    for key, power, style, label in (("ea", 1, ":", "∝ N"), ("sa", 2, "--", "∝ N²")):
        start = median_ms(measurements[first][key])
        time_axis.plot(
            positions,
            [start * (n / first) ** power for n in positions],
            style,
            color="grey",
            linewidth=0.8,
            label=label,
        )
    for axis, ylabel in ((time_axis, "median latency (ms)"), (memory_axis, "peak memory (MiB)")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("positions N = H·W")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _ms(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.1f}x" if denominator > 0 else "-"
