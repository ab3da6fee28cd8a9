"""The load-test report: a markdown table of every run, the EA/SA ratios and one plot per task.

Each plot shows p50/p95/p99 latency and requests/s against the number of users, EA next to SA.
The report names the machine, the backend, the models and the date, so figures copied into
docs/benchmarks.md carry their provenance.
"""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass
from pathlib import Path

from easerve.artifacts.machine import cpu_model
from easerve.loadtest.stats import RunStats, save_runs

REPORT_FILE = "report.md"
RUNS_FILE = "runs.json"
KIND_STYLE = {"ea": ("tab:blue", "EA"), "sa": ("tab:red", "SA")}
PERCENTILE_STYLE = (("p50_ms", ":", "p50"), ("p95_ms", "-", "p95"), ("p99_ms", "--", "p99"))


@dataclass(frozen=True)
class ReportContext:
    """Where and how the runs were made."""

    date: str
    machine: str
    backend: str
    model_inputs: dict[str, str]  # model name -> the input its network sees ("512x512")
    host: str
    duration: str
    image_size: int | None  # the size images were sent at; None: the samples' own


def machine_description() -> str:
    """CPU model and count, OS and Python, e.g. "AMD EPYC 7B13, 2 CPUs; Linux-6.1-x86_64; Python 3.11.7"."""
    return f"{cpu_model()}; {platform.platform()}; Python {platform.python_version()}"


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


def _ratio(numerator: float, denominator: float) -> str:
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return "n/a"
    return f"{numerator / denominator:.2f}x"


def _memory(run: RunStats) -> str:
    if run.server_rss_start_mb is None or run.server_rss_peak_mb is None:
        return "n/a"
    return f"{run.server_rss_start_mb:,.0f}, {run.server_rss_peak_mb:,.0f}"


def runs_table(runs: list[RunStats]) -> str:
    """One markdown row per run, in the given order."""
    lines = [
        "| task | attention | model | users | requests/s | p50 ms | p95 ms | p99 ms | requests | failures "
        "| server MB: start, peak |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        lines.append(
            f"| {run.task} | {run.attention} | {run.model} | {run.users} | {run.requests_per_s:.2f} "
            f"| {_ms(run.p50_ms)} | {_ms(run.p95_ms)} | {_ms(run.p99_ms)} | {run.requests} | {run.failures} "
            f"| {_memory(run)} |"
        )
    return "\n".join(lines)


def ratio_table(runs: list[RunStats]) -> str:
    """Per task and user count measured for both kinds: SA p95 / EA p95 (above 1: EA answers
    faster) and EA requests/s / SA requests/s (above 1: EA serves more)."""
    by_key = {(run.task, run.users, run.attention): run for run in runs}
    lines = [
        "| task | users | p95 SA/EA | requests/s EA/SA |",
        "| --- | ---: | ---: | ---: |",
    ]
    for task, users, kind in by_key:
        if kind != "ea" or (task, users, "sa") not in by_key:
            continue
        ea, sa = by_key[(task, users, "ea")], by_key[(task, users, "sa")]
        lines.append(
            f"| {task} | {users} | {_ratio(sa.p95_ms, ea.p95_ms)} | {_ratio(ea.requests_per_s, sa.requests_per_s)} |"
        )
    return "\n".join(lines)


def plot_task(task: str, runs: list[RunStats], path: Path) -> None:
    """Latency percentiles (left) and requests/s (right) against users, one line per kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency_axes, throughput_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, (colour, label) in KIND_STYLE.items():
        kind_runs = sorted((run for run in runs if run.attention == kind), key=lambda run: run.users)
        if not kind_runs:
            continue
        users = [run.users for run in kind_runs]
        for field, style, name in PERCENTILE_STYLE:
            values = [getattr(run, field) for run in kind_runs]
            latency_axes.plot(users, values, style, marker="o", color=colour, label=f"{label} {name}")
        throughput_axes.plot(users, [run.requests_per_s for run in kind_runs], marker="o", color=colour, label=label)
    latency_axes.set(xlabel="users", ylabel="latency (ms)", title=f"{task}: latency")
    if any(run.p50_ms > 0 for run in runs):  # NaN (nothing completed) compares False
        latency_axes.set_yscale("log")
    throughput_axes.set(xlabel="users", ylabel="requests/s", title=f"{task}: throughput")
    throughput_axes.set_ylim(bottom=0)
    user_counts = sorted({run.users for run in runs})
    for axes in (latency_axes, throughput_axes):
        axes.set_xscale("log", base=2)
        axes.set_xticks(user_counts, [str(count) for count in user_counts])
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _model_label(name: str, model_inputs: dict[str, str]) -> str:
    size = model_inputs.get(name)
    return f"{name} ({size})" if size else name


def render_markdown(runs: list[RunStats], context: ReportContext, plots: list[Path]) -> str:
    """The whole report: provenance, the EA/SA ratios, every run, the plots (relative links)."""
    size = f"{context.image_size}x{context.image_size}" if context.image_size else "the samples' own size"
    models = ", ".join(_model_label(name, context.model_inputs) for name in sorted({run.model for run in runs}))
    parts = [
        "# Load test: External Attention against self-attention",
        "",
        f"- date: {context.date}",
        f"- machine: {context.machine}",
        f"- backend: {context.backend}",
        f"- server: {context.host}",
        f"- models (the input their network sees): {models}",
        f"- images sent at {size}; {context.duration} per run, closed loop (users send back to back)",
        "",
        "## EA / SA",
        "",
        ratio_table(runs),
        "",
        "## Every run",
        "",
        runs_table(runs),
        "",
        *(f"![{plot.stem}]({plot.name})" for plot in plots),
        "",
    ]
    return "\n".join(parts)


def write_report(runs: list[RunStats], context: ReportContext, out_dir: Path) -> Path:
    """Write runs.json, one `<task>.png` per task and report.md into `out_dir`; returns the
    report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_runs(runs, out_dir / RUNS_FILE)
    plots = []
    for task in dict.fromkeys(run.task for run in runs):
        path = out_dir / f"{task}.png"
        plot_task(task, [run for run in runs if run.task == task], path)
        plots.append(path)
    report = out_dir / REPORT_FILE
    report.write_text(render_markdown(runs, context, plots))
    return report
