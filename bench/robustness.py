"""`easerve bench robustness`: attack scenarios against a live `easerve serve` on loopback.

Each scenario starts its own server (a free 127.0.0.1 port, the models the scenarios use from
--weights-dir, any --serve-arg flags) and reports, beside what the attack requests got: valid
requests lost, the server tree's peak RSS and its RSS once idle again, the worst latency of a
bystander request sent every 0.5 s, and for shutdown the requests lost to SIGTERM. The scenarios
are in `bench.robustness_scenarios`, the instruments in `bench.robustness_probes`, the tables and
files in `bench.robustness_report`. Writes OUT/bench_robustness.json (every figure) and
OUT/bench_robustness.md (the tables).

Only the standard library is imported at module level (see easerve/cli.py).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

from easerve.bench.arguments import add_weights_dirs, serve_command

SCENARIO_NAMES = (
    "batch-poisoning",
    "heavy-images",
    "v2-huge-tensor",
    "deadline",
    "slow-connections",
    "malformed-500s",
    "shutdown",
    "sa-memory",
    "chunk-floods",
    "loop-stalls",
    "client-leaves",
    "slow-body",
)
DEFAULT_OUT = Path("results") / "robustness"
MAX_DEFAULT_RSS_CAP_MB = 8192.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_weights_dirs(parser)
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=SCENARIO_NAMES,
        default=list(SCENARIO_NAMES),
        metavar="NAME",
        help=f"scenarios to run, in this order: {', '.join(SCENARIO_NAMES)} (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few requests per scenario instead of the issue's counts (seconds each; for tests)",
    )
    parser.add_argument(
        "--serve-arg",
        dest="serve_args",
        action="append",
        default=[],
        metavar="FLAG",
        help="an extra `easerve serve` argument for every server, repeatable; "
        "write it with '=': --serve-arg=--request-memory-mb=256",
    )
    parser.add_argument(
        "--rss-cap-mb",
        type=float,
        default=None,
        metavar="MB",
        help="kill a server whose process tree passes this RSS (the scenario is then reported as not "
        f"completed); 0 for none (default: half the available memory, at most {MAX_DEFAULT_RSS_CAP_MB:.0f})",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long a server may take to become ready (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help="writes DIR/bench_robustness.json and DIR/bench_robustness.md (default: %(default)s)",
    )


def _available_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def default_rss_cap_mb() -> float:
    available = _available_mb()
    return MAX_DEFAULT_RSS_CAP_MB if available is None else min(MAX_DEFAULT_RSS_CAP_MB, available / 2)


def _missing_models(weights_dirs: list[Path], models: tuple[str, ...]) -> list[str]:
    return [name for name in models if not any((folder / name / "manifest.json").is_file() for folder in weights_dirs)]


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 the report was written (whatever the scenarios found), 1 no server could be
    started, 2 bad input."""
    from easerve.artifacts.machine import cpu_model, load_average
    from easerve.bench import robustness_report as report
    from easerve.bench.report import print_table, to_markdown, write_report
    from easerve.bench.robustness_scenarios import FULL, MODELS, QUICK, Env, run_scenario

    weights_dirs = args.weights_dirs or [Path("weights")]
    missing = _missing_models(weights_dirs, MODELS)
    if missing:
        print(f"error: the scenarios use {', '.join(missing)}, not found in {', '.join(map(str, weights_dirs))}")
        return 2
    rss_cap_mb = default_rss_cap_mb() if args.rss_cap_mb is None else args.rss_cap_mb
    if rss_cap_mb < 0:
        print("error: --rss-cap-mb must be >= 0")
        return 2
    log_dir = Path(tempfile.mkdtemp(prefix="easerve-bench-robustness-"))
    command = serve_command(weights_dirs, MODELS, args.serve_args)
    counts = QUICK if args.quick else FULL
    env = Env(command, log_dir, args.ready_timeout, rss_cap_mb, counts, tuple(args.serve_args), tuple(weights_dirs))
    scenarios = [name for name in SCENARIO_NAMES if name in args.scenarios]

    machine = f"{cpu_model()}; load average before: {load_average()}"
    print(f"machine: {machine}")
    print(f"server: {' '.join(command[2:])} --port <free>; logs in {log_dir}; RSS cap {rss_cap_mb:,.0f} MB", flush=True)
    results = []
    for name in scenarios:
        print(f"{name}: running{' (quick)' if args.quick else ''}", flush=True)
        result = run_scenario(name, env)
        results.append(result)
        print(f"{name}: {result.outcome} in {result.duration_s:.1f} s", flush=True)
        for line in result.findings:
            print(f"    {line}", flush=True)

    machine = f"{machine}, after: {load_average()}"
    environment = (
        f"Measured {datetime.date.today().isoformat()} on {machine}; "
        f"{'--quick counts' if args.quick else 'full counts'}; extra serve flags: "
        f"{' '.join(args.serve_args) or 'none'}; server and clients share the machine."
    )
    tables = [report.summary_table(results), report.findings_table(results)]
    if twins := report.twins_table(results):
        tables.insert(1, twins)
    targets = report.target_lines(results)
    for table in tables:
        if sys.stdout.isatty():
            print_table(table)
        else:  # rich would wrap the wide table into a narrow column at a pipe's 80 characters
            print(to_markdown(table) + "\n")
    for line in targets:
        print(f"target {line}")
    print(f"machine: {machine}")

    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{report.REPORT_NAME}.json"
    markdown_path = args.out / f"{report.REPORT_NAME}.md"
    report.write_json(json_path, environment, machine, [sys.argv[0], *sys.argv[1:]], results)
    write_report(markdown_path, "robustness", environment, tables, targets, report.METHOD)
    print(f"wrote {json_path} and {markdown_path}")
    unstarted = [r for r in results if r.outcome.startswith("could not start") or _all_runs_unstarted(r)]
    return 1 if results and len(unstarted) == len(results) else 0


def _all_runs_unstarted(result) -> bool:
    runs = result.shutdown_runs
    return bool(runs) and all((run.error or "").startswith("could not start") for run in runs)
