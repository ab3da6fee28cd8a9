"""What `easerve bench scheduling` reports: each open-loop cell summarized, the tables, the
issue's targets checked against the figures, the simulator's projection, and the plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from easerve.bench.report import TableData, print_table, write_report
from easerve.bench.scheduling_load import OpenLoopRun, Outcome, Stream

ATTAINMENT_HELD = 0.99
LOW_LOAD = 0.5
WORST_MODEL_LOAD = 0.8

METHOD = """\
One server per policy (`easerve serve --scheduler slack|fifo|free`, every other setting its
default), each on 127.0.0.1 with the same models; the load comes from one process on the same
machine (asyncio + aiohttp). One stream per model: its task endpoint's first sample input (the
load test's samples; point clouds as `.npy`), `timeout=` its deadline. A stream's deadline is k
times its model's batch-1 latency (the median of 20 sequential requests, end to end, on the
first server). Capacity (1x) is the throughput of 200 answers of 32 closed-loop clients over the
mix (no deadline that binds) on the `--capacity-policy` server. Open loop: every stream sends at
the times of its own arrival process (Poisson, or gamma gaps with CV 3 for "bursty", the same
mean), at `share / sum of shares` of the offered rate, whatever the server answers; a request is
good when answered 200 within its deadline, timed from the moment it was due. Goodput: good
answers per second of the cell; attainment: good / sent (overall, and the worst model's). The
highest load held is the largest offered load of the sweep at which this and every lower load
kept attainment >= 0.99. Server figures per cell come from `/metrics` read before and after:
batch sizes, device busy (slot-seconds computing over the cell, per slot; `free` has no slots,
its figure is slot-seconds per second), scheduler overhead (its decision time over its busy
time), refusals at the door and early drops. Latency-model error: `/v1/models` after the
policy's cells (|predicted - measured| / measured over its last 512 batches). Low load side by
side (the target on p50 against `free`): one server per policy up at once, 0.5x of capacity
(Poisson), short cells in turn, the order rotated each round and each round's arrival times the
same for all, the answers of all rounds pooled per model: runs of one server minutes apart
differ by as much as the gap sought (10-30% here), which the per-cell table does not separate
from the policies. Closed loop: one
model, `--max-queue-size 16`, 16 then 128 clients sending again at once (no back-off), good =
200 within 1 s. Simulation: `bench.scheduling_sim` over the latency tables the slack server
measured, the same shares and deadlines, each policy on the slots its server ran (`free`
sharing the slack server's), loads relative to the tables' own capacity on those slots (the
device alone: no HTTP or decoding), and over a GPU-shaped projection of those tables (90% of each
batch's time fixed: an assumption, not a measurement)."""


def summarize(
    run: OpenLoopRun, streams: list[Stream], policy: str, pattern: str, load: float, rate: float, slots: int | None
) -> dict[str, Any]:
    """One open-loop cell as plain data (JSON)."""
    per_model = {}
    for index, stream in enumerate(streams):
        outcomes = [outcome for outcome in run.outcomes if outcome.stream == index]
        answered = sorted(outcome.latency_s for outcome in outcomes if outcome.status == 200)
        good = sum(1 for latency in answered if latency <= stream.deadline_s)
        statuses: dict[str, int] = {}
        for outcome in outcomes:
            statuses[str(outcome.status)] = statuses.get(str(outcome.status), 0) + 1
        per_model[stream.model] = {
            "sent": len(outcomes),
            "good": good,
            "statuses": statuses,
            "p50_ms": _quantile_ms(answered, 0.5),
            "p99_ms": _quantile_ms(answered, 0.99),
        }
    sent = sum(model["sent"] for model in per_model.values())
    good = sum(model["good"] for model in per_model.values())
    server = run.server
    return {
        "policy": policy,
        "pattern": pattern,
        "load": load,
        "offered_rps": rate,
        "sent": sent,
        "goodput": good / run.duration_s,
        "attainment": good / sent if sent else 1.0,
        "worst_attainment": min((m["good"] / m["sent"] for m in per_model.values() if m["sent"]), default=1.0),
        "models": per_model,
        "batch_sizes": server.batch_sizes,
        "mean_batch": server.items / server.batches if server.batches else None,
        "busy_per_slot": server.busy_s / run.duration_s / (slots or 1),
        "overhead": server.decision_s / server.busy_s if server.busy_s else None,
        "refused_at_door": server.refused_at_door,
        "dropped": server.dropped,
        "late_sends": run.late_sends,
    }


def _quantile_ms(values: list[float], quantile: float) -> float | None:
    return float(1000 * np.quantile(values, quantile)) if values else None


def _cells(results: dict[str, Any], policy: str, pattern: str) -> list[dict[str, Any]]:
    cells = results["policies"].get(policy, {}).get("cells", [])
    return sorted((cell for cell in cells if cell["pattern"] == pattern), key=lambda cell: cell["load"])


def _cell(results: dict[str, Any], policy: str, pattern: str, load: float) -> dict[str, Any] | None:
    return next((cell for cell in _cells(results, policy, pattern) if math.isclose(cell["load"], load)), None)


def highest_load_held(cells: list[dict[str, Any]]) -> float | None:
    """The largest load at which it and every lower load kept attainment >= 0.99."""
    held = None
    for cell in cells:
        if cell["attainment"] < ATTAINMENT_HELD:
            break
        held = cell["load"]
    return held


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def goodput_table(results: dict[str, Any]) -> TableData:
    loads = sorted({cell["load"] for policy in results["policies"].values() for cell in policy["cells"]})
    rows = []
    for policy in results["policies"]:
        for pattern in sorted({cell["pattern"] for cell in results["policies"][policy]["cells"]}):
            row = [f"{policy}, {pattern}"]
            for load in loads:
                cell = _cell(results, policy, pattern, load)
                row.append("–" if cell is None else f"{cell['goodput']:.0f} ({cell['attainment']:.2f})")
            rows.append(tuple(row))
    return TableData(
        "Goodput per second (attainment) by offered load, x capacity",
        ("policy, arrivals", *(f"{load:g}x" for load in loads)),
        tuple(rows),
    )


def headline_table(results: dict[str, Any]) -> TableData:
    rows = []
    for policy in results["policies"]:
        row = [policy]
        for pattern in ("poisson", "bursty"):
            cells = _cells(results, policy, pattern)
            held = highest_load_held(cells)
            row.append("–" if not cells else ("< lowest" if held is None else f"{held:g}x"))
        poisson = {cell["load"]: cell for cell in _cells(results, policy, "poisson")}
        one = poisson.get(1.0)
        for load in (2.0, 3.0):
            other = poisson.get(load)
            ratio = other["goodput"] / one["goodput"] if one and other and one["goodput"] else None
            row.append(_fmt(ratio, 2))
        worst = poisson.get(WORST_MODEL_LOAD)
        row.append(_fmt(worst["worst_attainment"] if worst else None, 3))
        overheads = [cell["overhead"] for cell in results["policies"][policy]["cells"] if cell["overhead"] is not None]
        row.append(f"{100 * max(overheads):.2f}%" if overheads else "–")
        errors = [
            model["latency"]["error_p95"]
            for model in results["policies"][policy]["models"]
            if model.get("latency") and model["latency"]["error_p95"] is not None
        ]
        row.append(f"{100 * min(errors):.0f}–{100 * max(errors):.0f}%" if errors else "–")
        row.append(str(results["policies"][policy].get("scheduler", {}).get("probes", "–")))
        rows.append(tuple(row))
    return TableData(
        "Per policy",
        (
            "policy",
            "held >= 0.99, poisson",
            "held >= 0.99, bursty",
            "goodput 2x / 1x",
            "goodput 3x / 1x",
            f"worst model at {WORST_MODEL_LOAD:g}x",
            "scheduler overhead (max)",
            "latency model p95 error",
            "latency probes",
        ),
        tuple(rows),
    )


def latency_table(results: dict[str, Any], pattern: str = "poisson") -> TableData:
    rows = []
    for policy in results["policies"]:
        for load in (LOW_LOAD, 1.0, 2.0):
            cell = _cell(results, policy, pattern, load)
            if cell is None:
                continue
            row = [f"{policy} {load:g}x"]
            for model in results["models"]:
                figures = cell["models"][model]
                row.append(f"{_fmt(figures['p50_ms'])} / {_fmt(figures['p99_ms'])}")
            rows.append(tuple(row))
    return TableData(
        f"p50 / p99 ms of the 200 answers, per model ({pattern})", ("policy, load", *results["models"]), tuple(rows)
    )


def pooled_p50_ms(outcomes: list[Outcome], streams: list[Stream]) -> dict[str, float | None]:
    """p50 ms of each stream's 200 answers among `outcomes`."""
    return {
        stream.model: _quantile_ms(
            sorted(outcome.latency_s for outcome in outcomes if outcome.stream == index and outcome.status == 200), 0.5
        )
        for index, stream in enumerate(streams)
    }


def low_load_table(results: dict[str, Any]) -> TableData:
    side_by_side = results.get("low_load")
    rows = []
    if side_by_side:
        p50 = side_by_side["p50_ms"]
        rows = [(policy, *(_fmt(p50[policy][model]) for model in results["models"])) for policy in p50]
        if "free" in p50:
            for policy in p50:
                if policy != "free":
                    rows.append(
                        (
                            f"{policy} / free",
                            *(
                                _fmt(p50[policy][m] / p50["free"][m], 2) if p50[policy][m] and p50["free"][m] else "–"
                                for m in results["models"]
                            ),
                        )
                    )
    title = "p50 ms at low load, servers side by side"
    if side_by_side:
        title += (
            f" ({side_by_side['load']:g}x poisson, {side_by_side['rounds']} rounds of {side_by_side['cell_s']:g} s "
            "each, taking turns)"
        )
    return TableData(title, ("policy", *results["models"]), tuple(rows))


def batch_table(results: dict[str, Any], pattern: str = "poisson") -> TableData:
    rows = []
    for policy in results["policies"]:
        for load in (1.0, 2.0):
            cell = _cell(results, policy, pattern, load)
            if cell is None:
                continue
            histogram = ", ".join(f"{size}: {count:.0f}" for size, count in cell["batch_sizes"].items())
            rows.append(
                (
                    f"{policy} {load:g}x",
                    _fmt(cell["mean_batch"], 2),
                    histogram,
                    f"{cell['busy_per_slot']:.2f}",
                    f"{cell['refused_at_door']:.0f}",
                    f"{cell['dropped']:.0f}",
                )
            )
    return TableData(
        f"Batches and the device ({pattern})",
        ("policy, load", "mean batch", "batches by size", "device busy", "refused at door", "dropped early"),
        tuple(rows),
    )


def closed_loop_table(results: dict[str, Any]) -> TableData:
    rows = []
    by_policy: dict[str, dict[int, dict[str, Any]]] = {}
    for row in results["closed_loop"]:
        by_policy.setdefault(row["policy"], {})[row["clients"]] = row
    for policy, runs in by_policy.items():
        few, many = runs.get(16), runs.get(128)
        ratio = many["goodput"] / few["goodput"] if few and many and few["goodput"] else None
        rows.append(
            (
                policy,
                _fmt(few["goodput"] if few else None),
                _fmt(many["goodput"] if many else None),
                _fmt(ratio, 2),
                str(many["statuses"] if many else "–"),
            )
        )
    return TableData(
        f"Closed loop, {results['models'][0]}, queue 16: goodput per second",
        ("policy", "16 clients", "128 clients", "128 / 16", "statuses at 128"),
        tuple(rows),
    )


def simulate_policies(
    results: dict[str, Any], policies: list[str], loads: list[float], duration_s: float, seed: int
) -> dict[str, Any]:
    """The simulator over the latency tables the slack server (else the first) measured, each
    policy with the slots its server ran (`free`, which has none, shares the source server's:
    the device's), loads relative to the tables' capacity on those slots."""
    from easerve.bench import scheduling_sim as sim

    source = results["policies"].get("slack") or next(iter(results["policies"].values()))
    described = {model["name"]: model for model in source["models"]}
    device_slots = source["scheduler"]["slots"] or 1
    slots = {policy: results["policies"][policy]["scheduler"]["slots"] or device_slots for policy in policies}
    projections = {}
    for projection in ("measured", "gpu-shaped"):
        models = []
        for name, share, deadline_ms in zip(results["models"], results["shares"], results["deadlines_ms"], strict=True):
            table = {int(size): ms / 1000 for size, ms in described[name]["latency"]["predicted_ms"].items()}
            if projection == "gpu-shaped":
                table = sim.gpu_projection(table)
            models.append(
                sim.SimModel(name, table, described[name]["batching"]["max_batch_size"], share, deadline_ms / 1000)
            )
        capacity = sim.capacity_rps(models) * device_slots
        rows = []
        for policy in policies:
            for load in sorted(loads):
                outcome = sim.simulate(
                    models, policy, load * capacity, duration_s, "poisson", seed, slots=slots[policy]
                )
                rows.append(
                    {
                        "policy": policy,
                        "load": load,
                        "goodput": outcome.goodput,
                        "attainment": outcome.attainment,
                        "worst_attainment": outcome.worst_attainment,
                    }
                )
        projections[projection] = {"capacity_rps": capacity, "slots": slots, "rows": rows}
    return projections


def simulation_table(results: dict[str, Any], projection: str) -> TableData:
    simulated = results["simulation"][projection]
    loads = sorted({row["load"] for row in simulated["rows"]})
    rows = []
    for policy in dict.fromkeys(row["policy"] for row in simulated["rows"]):
        cells = {row["load"]: row for row in simulated["rows"] if row["policy"] == policy}
        rows.append((policy, *(f"{cells[load]['goodput']:.0f} ({cells[load]['attainment']:.2f})" for load in loads)))
    label = "measured latency tables" if projection == "measured" else "GPU-shaped projection (assumed, not measured)"
    return TableData(
        f"Simulation, {label}: goodput (attainment), capacity {simulated['capacity_rps']:.0f} req/s, poisson"
        + "".join(f", {policy} {count} slot(s)" for policy, count in simulated["slots"].items()),
        ("policy", *(f"{load:g}x" for load in loads)),
        tuple(rows),
    )


def target_lines(results: dict[str, Any]) -> list[str]:
    """The issue's targets, each with the figure measured and whether it was met."""
    lines = []
    slack = "slack" if "slack" in results["policies"] else None
    if slack is None:
        return ["slack was not measured: no target checked"]
    poisson = {cell["load"]: cell for cell in _cells(results, slack, "poisson")}
    one = poisson.get(1.0)
    for load in (2.0, 3.0):
        other = poisson.get(load)
        if one and other and one["goodput"]:
            ratio = other["goodput"] / one["goodput"]
            lines.append(_verdict(f"slack goodput at {load:g}x >= 85% of 1x: {100 * ratio:.0f}%", ratio >= 0.85))
    rows = {(row["policy"], row["clients"]): row for row in results.get("closed_loop", [])}
    few, many = rows.get((slack, 16)), rows.get((slack, 128))
    if few and many and few["goodput"]:
        ratio = many["goodput"] / few["goodput"]
        lines.append(
            _verdict(f"closed loop 128 clients >= 90% of 16 clients (queue 16): {100 * ratio:.0f}%", ratio >= 0.9)
        )
    if "free" in results["policies"]:
        for pattern in ("poisson", "bursty"):
            ours = highest_load_held(_cells(results, slack, pattern))
            theirs = highest_load_held(_cells(results, "free", pattern))
            if ours is not None and theirs is not None:
                lines.append(
                    _verdict(
                        f"highest load at >= 0.99 attainment ({pattern}) >= 1.5x free's: {ours:g}x vs {theirs:g}x",
                        ours >= 1.5 * theirs,
                    )
                )
            else:
                lines.append(
                    f"MISSED: highest load at >= 0.99 ({pattern}): slack {ours}, free {theirs} "
                    "(None: not even the lowest load)"
                )
        side_by_side = results.get("low_load", {}).get("p50_ms", {})
        low, base = side_by_side.get(slack), side_by_side.get("free")
        if low and base:
            ratios = [low[m] / base[m] for m in results["models"] if low.get(m) and base.get(m)]
            if ratios:
                lines.append(
                    _verdict(
                        f"p50 at {LOW_LOAD:g}x within 5% of free's (servers side by side), every model: "
                        f"{min(ratios):.2f}–{max(ratios):.2f}x",
                        max(ratios) <= 1.05,
                    )
                )
    worst = poisson.get(WORST_MODEL_LOAD)
    if worst:
        lines.append(
            _verdict(
                f"worst model at {WORST_MODEL_LOAD:g}x >= 0.99: {worst['worst_attainment']:.3f}",
                worst["worst_attainment"] >= 0.99,
            )
        )
    overheads = [cell["overhead"] for cell in results["policies"][slack]["cells"] if cell["overhead"] is not None]
    if overheads:
        lines.append(
            _verdict(
                f"scheduler overhead < 2% of busy time: at most {100 * max(overheads):.2f}%", max(overheads) < 0.02
            )
        )
    errors = [
        model["latency"]["error_p95"]
        for model in results["policies"][slack]["models"]
        if model.get("latency") and model["latency"]["error_p95"] is not None
    ]
    if errors:
        lines.append(_verdict(f"latency model p95 error < 10%: {100 * max(errors):.0f}% at worst", max(errors) < 0.1))
    return lines


def _verdict(text: str, met: bool) -> str:
    return f"{'met' if met else 'MISSED'}: {text}"


def write(results: dict[str, Any], markdown_path: Path, plot_path: Path) -> None:
    tables = [
        headline_table(results),
        goodput_table(results),
        latency_table(results),
        low_load_table(results),
        batch_table(results),
        closed_loop_table(results),
        *(simulation_table(results, projection) for projection in results["simulation"]),
    ]
    for table in tables:
        print_table(table)
    targets = target_lines(results)
    for line in targets:
        print(line)
    environment = (
        f"{results['environment']} Models {', '.join(results['models'])}; shares {results['shares']}; "
        f"deadlines {results['deadlines_ms']} ms (k {results['deadline_factors']} x batch-1 "
        f"{results['batch1_ms']} ms); capacity {results['capacity_rps']:.0f} req/s."
    )
    _plot(results, plot_path)
    write_report(markdown_path, "scheduling", environment, tables, targets, METHOD, plot_path.name)


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patterns = sorted({cell["pattern"] for policy in results["policies"].values() for cell in policy["cells"]})
    figure, axes = plt.subplots(2, len(patterns), figsize=(6 * len(patterns), 8), squeeze=False)
    for column, pattern in enumerate(patterns):
        for policy in results["policies"]:
            cells = _cells(results, policy, pattern)
            loads = [cell["load"] for cell in cells]
            axes[0][column].plot(loads, [cell["goodput"] for cell in cells], marker="o", label=policy)
            axes[1][column].plot(loads, [cell["attainment"] for cell in cells], marker="o", label=policy)
        axes[0][column].set_title(f"goodput, {pattern} arrivals")
        axes[0][column].set_ylabel("good answers / s")
        axes[1][column].set_title(f"SLO attainment, {pattern} arrivals")
        axes[1][column].set_ylabel("good / sent")
        axes[1][column].axhline(ATTAINMENT_HELD, color="grey", linestyle=":", linewidth=1)
        for row in axes:
            row[column].set_xlabel("offered load, x capacity")
            row[column].legend()
            row[column].grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
