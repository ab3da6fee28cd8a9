"""`easerve bench attention`: External Attention against self-attention, counted and measured.

1. Params and MACs at the paper's setting (1 x 512 x 128 x 128, S = 64), counted on the meta
   device with torch's FlopCounterMode.
2. Latency (median and p90 of repeated forwards after warm-up) and peak memory of the SA unit,
   the EA unit and the official EA block for N positions, each case in a fresh process.

Only the standard library is imported at module level (see easerve/cli.py); torch loads when
the benchmark runs.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from easerve.artifacts.machine import cpu_model, load_average

if TYPE_CHECKING:
    from easerve.bench.attention_cases import Case, Measurement
    from easerve.bench.report import TableData

DEFAULT_POSITIONS = (256, 1024, 4096, 16384)
PAPER_DIM, PAPER_SIDE, PAPER_MEMORY = 512, 128, 64

METHOD = """\
Each (module, N) case runs in a fresh Python process on one 1 x d x H x W feature map (H = W,
N = H * W), in inference mode, with `--threads` torch intra-op threads. Latency: the first
forward and further warm-up forwards (until the warm-up time has passed) are not timed; then at
least `--repeats` forwards are timed, and more until `--time-budget` seconds are spent; the
tables give the median and the 90th percentile. Peak memory on CPU: the process's resident-set
high-water mark (VmHWM, reset via /proc/self/clear_refs just before) during the first forward at
this size (after one on a 2 x 2 map, which absorbs one-time initialisation), minus the resident
set before it: every page the forward touched, inside torch's allocator or
not, i.e. what the OS sees; on CUDA: torch.cuda.max_memory_allocated above the level before the
forward. SA unit: single-head attention with d x d Q, K, V, O projections
(F.scaled_dot_product_attention); EA unit: M_k and M_v with S memory slots; EA block: the
official block, 1x1 convs + EA unit + BatchNorm + residual + ReLU. MACs: FlopCounterMode flops
/ 2 (matmuls and convolutions)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dim", type=int, default=PAPER_DIM, help="channels d of the measured feature maps (default: %(default)s)"
    )
    parser.add_argument(
        "--positions",
        type=int,
        nargs="+",
        default=list(DEFAULT_POSITIONS),
        metavar="N",
        help="positions N = H*W to measure, each a perfect square (default: %(default)s)",
    )
    parser.add_argument(
        "--memory-size",
        type=int,
        default=PAPER_MEMORY,
        help="EA memory slots S of the measured modules (default: %(default)s)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where to measure (default: %(default)s); cuda needs an NVIDIA GPU "
        "and a CUDA build of torch, which this project's CPU dev machine lacks",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="at least this many timed forwards per case (default: %(default)s)"
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="keep timing a case until this much time is spent (default: %(default)s)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="untimed warm-up per case, at least one forward (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads per case, 0 for torch's default; one thread "
        "keeps timings steady on a shared machine (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results"),
        metavar="DIR",
        help="writes DIR/bench_attention.md and DIR/bench_attention.png (default: %(default)s)",
    )
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 done, 1 a case failed (or a target missed under --strict), 2 bad input."""
    from easerve.bench import attention_report as report
    from easerve.bench.report import print_table, write_report

    problem = _invalid_arguments(args)
    if problem:
        print(f"error: {problem}")
        return 2
    cost_table = _paper_cost_table()
    print_table(cost_table)
    environment_before = _environment(args)
    try:
        measurements = _measure_all(_cases(args))
    except RuntimeError as error:
        print(f"error: {error}")
        return 1
    environment = f"{environment_before}; load average after: {load_average()}. Other processes may share the machine."
    measured_tables = [
        report.latency_table(measurements, args.dim, args.device),
        report.memory_table(measurements, args.dim, args.device),
    ]
    checks = report.target_checks(measurements)
    for table in measured_tables:
        print_table(table)
    print("\n".join([*report.target_lines(checks), environment]))

    args.out.mkdir(parents=True, exist_ok=True)
    markdown_path = args.out / "bench_attention.md"
    plot_path = args.out / "bench_attention.png"
    write_report(
        markdown_path, "attention", environment, [cost_table, *measured_tables], report.target_lines(checks), METHOD
    )
    report.plot(measurements, plot_path, f"EA vs self-attention, d = {args.dim}, S = {args.memory_size}, {args.device}")
    print(f"wrote {markdown_path} and {plot_path}")
    missed = any(check.met is False for check in checks)
    return 1 if args.strict and missed else 0


def _invalid_arguments(args: argparse.Namespace) -> str | None:
    import torch

    from easerve.bench.attention_cases import square_side

    try:
        for positions in args.positions:
            square_side(positions)
    except ValueError as error:
        return str(error)
    if args.device == "cuda" and not torch.cuda.is_available():
        return "--device cuda, but this torch sees no CUDA GPU"
    return None


def _paper_cost_table() -> TableData:
    from easerve.bench.attention_cases import COMPARED_MODULES, count_cost
    from easerve.bench.attention_report import cost_table

    costs = {m: count_cost(m, PAPER_DIM, PAPER_SIDE, PAPER_MEMORY) for m in COMPARED_MODULES}
    return cost_table(costs, f"1 x {PAPER_DIM} x {PAPER_SIDE} x {PAPER_SIDE}, S = {PAPER_MEMORY}")


def _cases(args: argparse.Namespace) -> list[Case]:
    from easerve.bench.attention_cases import COMPARED_MODULES, Case

    return [
        Case(
            module,
            args.dim,
            positions,
            args.memory_size,
            args.device,
            args.repeats,
            args.time_budget,
            args.warmup,
            args.threads,
        )
        for positions in sorted(set(args.positions))
        for module in COMPARED_MODULES
    ]


def _measure_all(cases: list[Case]) -> dict[int, dict[str, Measurement]]:
    """Every case in its own process, with a progress bar; grouped as {N: {module: result}}."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from easerve.bench.attention_cases import measure_in_fresh_process

    measurements: dict[int, dict[str, Measurement]] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task("measuring", total=len(cases))
        for case in cases:
            progress.update(task, description=f"{case.module} at N={case.positions:,}")
            measurements.setdefault(case.positions, {})[case.module] = measure_in_fresh_process(case)
            progress.advance(task)
    return measurements


def _environment(args: argparse.Namespace) -> str:
    import torch

    if args.device == "cuda":
        hardware = torch.cuda.get_device_name()
    else:
        hardware = cpu_model()
    threads = args.threads or torch.get_num_threads()
    return (
        f"Measured {datetime.date.today().isoformat()} on {hardware} ({args.device}), "
        f"torch {torch.__version__}, {threads} intra-op thread(s); "
        f"load average before: {load_average()}"
    )
