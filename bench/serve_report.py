"""What `easerve bench serve` found: its tables, target checks and plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from easerve.bench.report import TableData, print_table
from easerve.bench.serve_load import LoadRun
from easerve.bench.serve_offline import OfflineFigures

# The servers compared, in table order: key -> label.
SERVER_LABELS = {
    "dynamic": "easerve (dynamic batching)",
    "batch1": "easerve, max batch 1",
    "naive": "naive FastAPI + onnxruntime",
}
MIN_CEILING_RATIO = 0.85
MIN_SPEEDUP_OVER_NAIVE = 2.0
SPEEDUP_CONCURRENCY = 32
MAX_OVERHEAD_MS = 2.0
PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class Target:
    description: str
    value: str  # "-" where what it needs was not measured
    met: bool | None


@dataclass(frozen=True)
class ModelResults:
    name: str
    task: str
    offline: OfflineFigures
    runs: dict[str, list[LoadRun]]  # server key -> one run per concurrency, in the same order

    def at(self, server: str, concurrency: int) -> LoadRun | None:
        return next((run for run in self.runs[server] if run.concurrency == concurrency), None)

    def saturation(self) -> LoadRun:
        """The dynamic-batching run with the highest throughput."""
        return max(self.runs["dynamic"], key=lambda run: run.throughput)

    def speedup_over_naive(self, concurrency: int, server: str = "dynamic") -> float | None:
        """`server`'s throughput over the naive server's at `concurrency`."""
        ours, naive = self.at(server, concurrency), self.at("naive", concurrency)
        if ours is None or naive is None or naive.throughput == 0:
            return None
        return ours.throughput / naive.throughput

    def overhead_ms(self) -> float | None:
        """Median latency of a lone client minus the bare pipeline's."""
        lone = self.at("dynamic", 1)
        p50 = lone.percentile_ms(50) if lone is not None else None
        return None if p50 is None else p50 - self.offline.pipeline_ms


def load_table(results: ModelResults) -> TableData:
    """Per concurrency and server: throughput, latency percentiles, mean batch size, the
    throughput over the naive server's at the same concurrency, and the failed requests."""
    rows = []
    for concurrency in [run.concurrency for run in results.runs["dynamic"]]:
        for server, label in SERVER_LABELS.items():
            run = results.at(server, concurrency)
            if run is None:
                continue
            rows.append(
                (
                    str(concurrency),
                    label,
                    f"{run.throughput:,.1f}",
                    *(_number(run.percentile_ms(percent), ".1f") for percent in PERCENTILES),
                    _number(run.mean_batch_size, ".2f"),
                    _times(results.speedup_over_naive(concurrency, server)),
                    str(run.failures),
                )
            )
    headers = (
        "clients",
        "server",
        "req/s",
        *(f"p{percent} ms" for percent in PERCENTILES),
        "mean batch",
        "req/s over naive",
        "failed",
    )
    title = f"{results.name} ({results.task}): closed-loop load"
    return TableData(title, headers, tuple(rows))


def yardstick_table(all_results: list[ModelResults]) -> TableData:
    """Per model (a column each): the service against the offline ceiling and the bare request."""
    measures: dict[str, list[str]] = {
        "offline ceiling, img/s": [],
        "service at saturation, req/s": [],
        "service / ceiling": [],
        "bare model at batch 1, ms": [],
        "bare pipeline of one request, ms": [],
        "service p50 with 1 client, ms": [],
        "overhead over the bare pipeline, ms": [],
    }
    for results in all_results:
        offline, best, lone = results.offline, results.saturation(), results.at("dynamic", 1)
        values = (
            f"{offline.ceiling_per_s:,.0f} (batch {offline.max_batch_size})",
            f"{best.throughput:,.1f} ({best.concurrency} clients)",
            f"{best.throughput / offline.ceiling_per_s:.2f}",
            f"{offline.model_ms:.2f}",
            f"{offline.pipeline_ms:.2f}",
            _number(lone.percentile_ms(50) if lone else None, ".2f"),
            _number(results.overhead_ms(), "+.2f"),
        )
        for column, value in zip(measures.values(), values, strict=True):
            column.append(value)
    rows = tuple((measure, *values) for measure, values in measures.items())
    headers = ("", *(results.name for results in all_results))
    return TableData("Against the offline ceiling and the bare single request", headers, rows)


def target_checks(all_results: list[ModelResults]) -> list[Target]:
    """The three serving targets (ceiling ratio, speedup over naive, one-client overhead), per model."""
    targets = []
    for results in all_results:
        ratio = results.saturation().throughput / results.offline.ceiling_per_s
        speedup = results.speedup_over_naive(SPEEDUP_CONCURRENCY)
        overhead = results.overhead_ms()
        targets += [
            Target(
                f"{results.name}: service / offline ceiling at saturation (target >= {MIN_CEILING_RATIO})",
                f"{ratio:.2f}",
                ratio >= MIN_CEILING_RATIO,
            ),
            Target(
                f"{results.name}: dynamic batching / naive server at {SPEEDUP_CONCURRENCY} clients "
                f"(target >= {MIN_SPEEDUP_OVER_NAIVE:.0f}x)",
                _times(speedup),
                None if speedup is None else speedup >= MIN_SPEEDUP_OVER_NAIVE,
            ),
            Target(
                f"{results.name}: p50 of a lone client over the bare pipeline (target <= {MAX_OVERHEAD_MS} ms)",
                _number(overhead, "+.2f") + " ms",
                None if overhead is None else overhead <= MAX_OVERHEAD_MS,
            ),
        ]
    return targets


def target_lines(targets: list[Target]) -> list[str]:
    verdicts = {True: "met", False: "MISSED", None: "not measured"}
    return [f"{target.description}: {target.value} - {verdicts[target.met]}" for target in targets]


def show(tables: list[TableData], targets: list[Target]) -> None:
    for table in tables:
        print_table(table)
    print("\n".join(target_lines(targets)))


def plot(all_results: list[ModelResults], path: Path) -> None:
    """Per model: throughput (with the offline ceiling) and p50 / p99 latency against clients."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(all_results), 2, figsize=(11, 4 * len(all_results)), squeeze=False)
    for (throughput_axis, latency_axis), results in zip(axes, all_results, strict=True):
        for server, label in SERVER_LABELS.items():
            runs = results.runs[server]
            clients = [run.concurrency for run in runs]
            line = throughput_axis.plot(clients, [run.throughput for run in runs], "o-", label=label)[0]
            latency_axis.plot(
                clients, [run.percentile_ms(50) for run in runs], "o-", color=line.get_color(), label=f"{label}, p50"
            )
            latency_axis.plot(
                clients, [run.percentile_ms(99) for run in runs], "x--", color=line.get_color(), label=f"{label}, p99"
            )
        throughput_axis.axhline(
            results.offline.ceiling_per_s, color="grey", linestyle=":", label="offline ceiling (batched onnxruntime)"
        )
        throughput_axis.set_ylabel("requests / s")
        latency_axis.set_ylabel("latency (ms)")
        latency_axis.set_yscale("log")
        for axis in (throughput_axis, latency_axis):
            axis.set_xscale("log", base=2)
            axis.set_xlabel("concurrent clients")
            axis.set_title(results.name)
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"
