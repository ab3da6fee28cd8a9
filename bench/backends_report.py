"""What `easerve bench backends` found: one table (latency, throughput, ratios), the speed
targets (ORT FP32 vs eager, INT8 vs FP32), and a bar chart of throughput per model and backend."""

from __future__ import annotations

from pathlib import Path

from easerve.bench.attention_report import TargetCheck
from easerve.bench.backends_cases import (
    BACKENDS,
    LATENCY_BATCH,
    THROUGHPUT_BATCHES,
    ModelFigures,
)
from easerve.bench.report import TableData

RATIO_BATCH = 8
MIN_FP32_OVER_EAGER = 1.3
MIN_INT8_OVER_FP32 = 1.5
# INT8's speed target applies where its task metric lost at most this many points.
INT8_TARGET_MAX_DROP_POINTS = 1.0


def _throughput_ratio(figures: ModelFigures, numerator: str, denominator: str) -> float | None:
    if numerator not in figures.backends or denominator not in figures.backends:
        return None
    top = figures.backends[numerator].throughput[RATIO_BATCH]
    return top / figures.backends[denominator].throughput[RATIO_BATCH]


def _ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _drop_text(figures: ModelFigures, backend: str) -> str:
    if backend != "int8" or figures.int8_drop_points is None:
        return ""
    return f"{figures.int8_drop_points:+.2f}"


def results_table(all_figures: list[ModelFigures], threads: int) -> TableData:
    """A row per model and backend: batch-1 latency, throughput, ratios at RATIO_BATCH."""
    headers = (
        "model",
        "backend",
        f"b{LATENCY_BATCH} ms p50",
        f"b{LATENCY_BATCH} ms p95",
        *(f"b{b} /s" for b in THROUGHPUT_BATCHES),
        f"b{RATIO_BATCH} vs eager",
        f"b{RATIO_BATCH} vs FP32",
        "INT8 drop (pts)",
    )
    rows = []
    for figures in all_figures:
        for key, backend in figures.backends.items():
            rows.append(
                (
                    figures.name,
                    BACKENDS[key],
                    f"{backend.latency.median * 1e3:.2f}",
                    f"{backend.latency.p95 * 1e3:.2f}",
                    *(f"{backend.throughput[b]:,.1f}" for b in THROUGHPUT_BATCHES),
                    _ratio_text(_throughput_ratio(figures, key, "eager")),
                    _ratio_text(_throughput_ratio(figures, key, "fp32")),
                    _drop_text(figures, key),
                )
            )
    title = f"Backends on CPU, {threads or 'default'} thread(s): latency at batch {LATENCY_BATCH}, throughput"
    return TableData(title, headers, tuple(rows))


def target_checks(all_figures: list[ModelFigures]) -> list[TargetCheck]:
    """Per model: ORT FP32 >= 1.3x eager at batch 8; INT8 >= 1.5x FP32 where its metric drop is
    at most one point (reported, not checked, where the drop is larger or there is no INT8)."""
    checks = []
    for figures in all_figures:
        fp32 = _throughput_ratio(figures, "fp32", "eager")
        checks.append(
            TargetCheck(
                f"{figures.name}: onnxruntime FP32 / PyTorch eager throughput at batch {RATIO_BATCH} "
                f"(target >= {MIN_FP32_OVER_EAGER}x)",
                fp32,
                fp32 is not None and fp32 >= MIN_FP32_OVER_EAGER,
            )
        )
        int8 = _throughput_ratio(figures, "int8", "fp32")
        drop = figures.int8_drop_points
        applies = drop is not None and drop <= INT8_TARGET_MAX_DROP_POINTS
        condition = "no INT8 graph" if drop is None else f"metric drop {drop:.2f} points"
        checks.append(
            TargetCheck(
                f"{figures.name}: onnxruntime INT8 / FP32 throughput at batch {RATIO_BATCH} (target >= "
                f"{MIN_INT8_OVER_FP32}x where the metric drop is <= {INT8_TARGET_MAX_DROP_POINTS:g} "
                f"point; {condition})",
                int8,
                (int8 >= MIN_INT8_OVER_FP32) if applies and int8 is not None else None,
            )
        )
    return checks


def plot(all_figures: list[ModelFigures], path: Path, title: str) -> None:
    """Grouped bars: throughput per model and backend, one panel per throughput batch (log y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f.name for f in all_figures]
    width = 0.8 / len(BACKENDS)
    figure, axes = plt.subplots(len(THROUGHPUT_BATCHES), 1, figsize=(max(8, len(names)), 8), sharex=True)
    for axis, batch in zip(axes, THROUGHPUT_BATCHES, strict=True):
        for index, (key, label) in enumerate(BACKENDS.items()):
            values = [f.backends[key].throughput[batch] if key in f.backends else 0 for f in all_figures]
            positions = [i + (index - (len(BACKENDS) - 1) / 2) * width for i in range(len(names))]
            axis.bar(positions, values, width, label=label)
        axis.set_yscale("log")
        axis.set_ylabel(f"samples/s at batch {batch}")
        axis.grid(True, axis="y", which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[-1].set_xticks(range(len(names)), names, rotation=30, ha="right")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
