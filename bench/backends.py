"""`easerve bench backends`: PyTorch eager against onnxruntime FP32 and INT8, per exported model.

For every bundled model exported under --weights-dir: latency (median, p95) at batch 1 and
throughput at batch 8 and 32 on this CPU, a table with ratios, the speed targets (docs/benchmarks.md), and
OUT/bench_backends.md + OUT/bench_backends.png.

Only the standard library is imported at module level (`artifacts.machine` is stdlib-only; see
easerve/cli.py).
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from easerve.artifacts.machine import cpu_model, load_average

if TYPE_CHECKING:
    from easerve.bench.backends_cases import ModelFigures
    from easerve.bench.report import TableData

REPORT_NAME = "bench_backends"

METHOD = """\
Every backend runs the same seeded random inputs at the manifest's shapes (the preprocessed image
size or point count; class labels in range for the generators), in this one process, one model
after the other. PyTorch eager: the checkpoint's model in inference mode with `--threads` intra-op
threads; onnxruntime: `model.onnx` and `model.int8.onnx` (the export's static QDQ graph) on the CPU
execution provider with all graph optimisations and `--threads` intra-op threads. Per batch size
the backends take turns in five rounds (so that a change in the machine's load reaches them alike);
in each round a backend gets one untimed call, then timed calls until a fifth of `--time-budget`
seconds is spent (at least one per round). Latency: median and p95 of the batch-1 calls.
Throughput: batch size over the median call time. INT8 metric drop: the points the INT8 graph's
task metric lost against the FP32 graph on the held-out split at export (from the manifest;
negative is a gain). Served path (--served): each variant the export kept within its accuracy
gate, served alone by `easerve serve --precision <variant>` with the same intra-op threads, and
loaded on its task endpoint with a bundled sample by closed-loop aiohttp clients on the same
machine (1 s warm-up, then the timed window); mean batch from the server's counters."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=Path("weights"),
        help="folder of exported <model>/ folders (manifest.json, model.onnx and the checkpoint; default: %(default)s)",
    )
    parser.add_argument(
        "--models", nargs="+", metavar="NAME", help="models to measure (default: every bundled model exported there)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads of every backend, 0 for each runtime's default; one "
        "thread keeps timings steady on a shared machine (default: %(default)s)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="timed seconds per backend and batch size, over all rounds (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results"),
        metavar="DIR",
        help=f"writes DIR/{REPORT_NAME}.md and DIR/{REPORT_NAME}.png (default: %(default)s)",
    )
    parser.add_argument(
        "--served",
        action="store_true",
        help="also serve each kept variant (easerve serve --precision V) and load it with closed-loop clients",
    )
    parser.add_argument("--served-clients", type=int, default=32, metavar="N", help="(default: %(default)s)")
    parser.add_argument(
        "--served-seconds", type=float, default=5.0, metavar="S", help="timed window per variant (default: %(default)s)"
    )
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 done, 1 a target missed under --strict, 2 nothing to measure."""
    import torch

    from easerve.bench import backends_report as report
    from easerve.bench.attention_report import target_lines
    from easerve.bench.backends_cases import measure_model
    from easerve.bench.report import print_table

    model_dirs = _model_dirs(args)
    if isinstance(model_dirs, str):
        print(f"error: {model_dirs}")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    environment_before = _environment(args.threads)
    all_figures = [
        measure_model(folder, args.threads, args.time_budget, lambda line: print(line, flush=True))
        for folder in model_dirs
    ]
    environment = f"{environment_before}; load average after: {load_average()}. Other processes may share the machine."
    table = report.results_table(all_figures, args.threads)
    checks = report.target_checks(all_figures)
    print_table(table)
    tables = [table]
    if args.served:
        from easerve.bench.backends_served import measure_served, served_table

        served = measure_served(
            model_dirs,
            args.threads,
            args.served_clients,
            1.0,
            args.served_seconds,
            lambda line: print(line, flush=True),
        )
        tables.append(served_table(served, args.served_clients))
        print_table(tables[-1])
    print("\n".join([*target_lines(checks), environment]))
    _save(args, all_figures, tables, target_lines(checks), environment)
    missed = any(check.met is False for check in checks)
    return 1 if args.strict and missed else 0


def _save(
    args: argparse.Namespace,
    all_figures: list[ModelFigures],
    tables: list[TableData],
    targets: list[str],
    environment: str,
) -> None:
    """OUT/bench_backends.png and OUT/bench_backends.md (which shows the figure)."""
    from easerve.bench.backends_report import plot
    from easerve.bench.report import write_report

    args.out.mkdir(parents=True, exist_ok=True)
    markdown_path = args.out / f"{REPORT_NAME}.md"
    plot_path = args.out / f"{REPORT_NAME}.png"
    plot(all_figures, plot_path, f"Throughput per backend on CPU, {args.threads or 'default'} thread(s)")
    write_report(markdown_path, "backends", environment, tables, targets, METHOD, figure=plot_path.name)
    print(f"wrote {markdown_path} and {plot_path}")


def _model_dirs(args: argparse.Namespace) -> list[Path] | str:
    """The exported model folders to measure, or an error message."""
    from easerve.model_defs.registry import list_models

    names = args.models or [entry.name for entry in list_models(bundled=True)]
    found = [args.weights_dir / n for n in names if (args.weights_dir / n / "manifest.json").is_file()]
    missing = sorted(set(names) - {folder.name for folder in found})
    if args.models and missing:
        return f"no exported model {', '.join(missing)} under {args.weights_dir} (run `easerve export`)"
    if not found:
        return f"no exported bundled model under {args.weights_dir} (run `easerve export --all`)"
    if missing:
        print(f"not exported under {args.weights_dir}, skipped: {', '.join(missing)}")
    return found


def _environment(threads: int) -> str:
    import onnxruntime
    import torch

    return (
        f"Measured {datetime.date.today().isoformat()} on {cpu_model()} (CPU), torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, {threads or 'default'} intra-op thread(s); "
        f"load average before: {load_average()}"
    )
