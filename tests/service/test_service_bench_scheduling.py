"""`easerve bench scheduling`: its arrival processes, what it reads from the server, how it judges
a cell and the issue's targets, and a short run of the whole benchmark on the fixture models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx_fixtures import model_name

from easerve.bench import scheduling_report as report
from easerve.bench.scheduling_load import (
    OpenLoopRun,
    Outcome,
    ServerWindow,
    Stream,
    arrival_times,
    schedule,
    server_window,
)

REPO = Path(__file__).resolve().parents[2]


def test_poisson_and_bursty_arrivals_have_the_rate_asked_for_and_their_burstiness():
    rng = np.random.default_rng(3)
    poisson = arrival_times(200.0, 100.0, "poisson", rng)
    bursty = arrival_times(200.0, 100.0, "bursty", rng)
    for times in (poisson, bursty):
        assert abs(len(times) - 20_000) < 4 * 3 * np.sqrt(20_000)
        assert times.min() >= 0 and times.max() < 100.0
    cv = lambda times: np.diff(times).std() / np.diff(times).mean()  # noqa: E731
    assert cv(poisson) == pytest.approx(1.0, rel=0.1)
    assert cv(bursty) == pytest.approx(3.0, rel=0.2)
    with pytest.raises(ValueError):
        arrival_times(1.0, 1.0, "uniform", rng)


def test_the_schedule_splits_the_rate_by_the_streams_shares_in_time_order():
    streams = [Stream("a", "/a", b"", "x", 0.1, 3.0), Stream("b", "/b", b"", "x", 0.1, 1.0)]
    events = schedule(streams, 400.0, 20.0, "poisson", seed=1)
    times = [moment for moment, _ in events]
    assert times == sorted(times)
    counts = np.bincount([index for _, index in events])
    assert counts[0] == pytest.approx(6000, rel=0.05)
    assert counts[1] == pytest.approx(2000, rel=0.08)
    assert events == schedule(streams, 400.0, 20.0, "poisson", seed=1)


def test_the_server_window_is_the_difference_of_the_counters_at_its_ends():
    def counters(batches_of_one: float, batches_of_two: float, busy: float, dropped: float) -> dict:
        bucket = lambda le, value: (("easerve_batch_size_bucket", (("le", le), ("model", "m"))), value)  # noqa: E731
        return dict(
            [
                bucket("1.0", batches_of_one),
                bucket("2.0", batches_of_one + batches_of_two),
                bucket("+Inf", batches_of_one + batches_of_two),
                (("nv_inference_count_total", (("model", "m"),)), batches_of_one + 2 * batches_of_two),
                (("nv_inference_exec_count_total", (("model", "m"),)), batches_of_one + batches_of_two),
                (("easerve_device_busy_seconds", ()), busy),
                (("easerve_scheduler_dropped", ()), dropped),
                (("nv_inference_request_failure_total", (("model", "m"), ("reason", "overloaded"))), dropped),
            ]
        )

    window = server_window(counters(5, 1, 2.0, 1), counters(8, 5, 3.5, 4))
    assert window.batch_sizes == {"1": 3, "2": 4}
    assert (window.items, window.batches) == (11, 7)
    assert window.busy_s == pytest.approx(1.5)
    assert window.dropped == 3
    assert window.failures == {"overloaded": 3}


def _stream(name: str, deadline_s: float) -> Stream:
    return Stream(name, f"/{name}", b"", "x", deadline_s, 1.0)


def test_a_cell_counts_only_answers_within_their_deadline_as_good():
    streams = [_stream("a", 0.1), _stream("b", 0.05)]
    outcomes = (
        Outcome(0, 200, 0.05),
        Outcome(0, 200, 0.2),  # late
        Outcome(0, 503, 0.001),
        Outcome(1, 200, 0.01),
        Outcome(1, 504, 0.05),
    )
    run = OpenLoopRun(2.0, outcomes, ServerWindow(items=3, batches=2, busy_s=1.0, decision_s=0.01), 0)
    cell = report.summarize(run, streams, "slack", "poisson", 1.0, 2.5, 1)
    assert cell["sent"] == 5
    assert cell["goodput"] == pytest.approx(2 / 2.0)
    assert cell["attainment"] == pytest.approx(2 / 5)
    assert cell["worst_attainment"] == pytest.approx(1 / 3)
    assert cell["models"]["a"]["statuses"] == {"200": 2, "503": 1}
    assert cell["mean_batch"] == pytest.approx(1.5)
    assert cell["busy_per_slot"] == pytest.approx(0.5)
    assert cell["overhead"] == pytest.approx(0.01)
    json.dumps(cell)


def _cells(policy: str, attainments: dict[float, float], goodputs: dict[float, float]) -> list[dict]:
    return [
        {
            "policy": policy,
            "pattern": "poisson",
            "load": load,
            "goodput": goodputs[load],
            "attainment": attainment,
            "worst_attainment": attainment,
            "overhead": 0.005,
            "models": {"m": {"p50_ms": 10.0, "p99_ms": 20.0, "sent": 1, "good": 1, "statuses": {}}},
            "batch_sizes": {},
            "mean_batch": 1.0,
            "busy_per_slot": 0.5,
            "refused_at_door": 0,
            "dropped": 0,
        }
        for load, attainment in attainments.items()
    ]


def test_the_highest_load_held_stops_at_the_first_load_below_the_attainment():
    cells = _cells("slack", {0.5: 1.0, 0.8: 0.995, 1.0: 0.98, 1.5: 0.999}, dict.fromkeys((0.5, 0.8, 1.0, 1.5), 1.0))
    assert report.highest_load_held(cells) == 0.8
    assert report.highest_load_held(cells[2:]) is None


def test_the_targets_are_judged_on_the_figures_and_a_miss_says_so():
    loads = (0.5, 0.8, 1.0, 2.0, 3.0)
    results = {
        "models": ["m"],
        "policies": {
            "slack": {
                "cells": _cells(
                    "slack", {0.5: 1.0, 0.8: 1.0, 1.0: 0.9, 2.0: 0.5, 3.0: 0.3}, dict(zip(loads, (50, 80, 100, 90, 80)))
                ),
                "models": [{"name": "m", "latency": {"error_p95": 0.05}}],
            },
            "free": {
                "cells": _cells(
                    "free", {0.5: 1.0, 0.8: 0.9, 1.0: 0.5, 2.0: 0.1, 3.0: 0.0}, dict(zip(loads, (50, 70, 50, 10, 1)))
                ),
                "models": [],
            },
        },
        "closed_loop": [
            {"policy": "slack", "clients": 16, "goodput": 100.0, "statuses": {}},
            {"policy": "slack", "clients": 128, "goodput": 80.0, "statuses": {}},
        ],
        "low_load": {"load": 0.5, "rounds": 6, "cell_s": 3.0, "p50_ms": {"slack": {"m": 10.4}, "free": {"m": 10.0}}},
    }
    lines = report.target_lines(results)
    assert "met: p50 at 0.5x within 5% of free's (servers side by side), every model: 1.04–1.04x" in lines
    results["low_load"]["p50_ms"]["slack"]["m"] = 10.6
    assert "MISSED: p50 at 0.5x within 5% of free's (servers side by side), every model: 1.06–1.06x" in (
        report.target_lines(results)
    )
    assert "met: slack goodput at 2x >= 85% of 1x: 90%" in lines
    assert "MISSED: slack goodput at 3x >= 85% of 1x: 80%" in lines
    assert "MISSED: closed loop 128 clients >= 90% of 16 clients (queue 16): 80%" in lines
    assert "met: highest load at >= 0.99 attainment (poisson) >= 1.5x free's: 0.8x vs 0.5x" in lines
    assert any(line.startswith("met: worst model at 0.8x") for line in lines)
    assert any(line.startswith("met: latency model p95 error < 10%") for line in lines)


def test_the_simulation_runs_each_policy_on_the_slots_its_server_ran(monkeypatch):
    from easerve.bench import scheduling_sim as sim

    described = {
        "name": "m",
        "latency": {"predicted_ms": {"1": 2.0, "2": 3.0}},
        "batching": {"max_batch_size": 2},
    }
    results = {
        "models": ["m"],
        "shares": [1.0],
        "deadlines_ms": [50.0],
        "policies": {
            "slack": {"scheduler": {"slots": 2}, "models": [described]},
            "fifo": {"scheduler": {"slots": 1}, "models": [described]},
            "free": {"scheduler": {"slots": None}, "models": [described]},
        },
    }
    calls = []
    real = sim.simulate

    def recorded(models, policy, offered_rps, *args, slots=1, **kwargs):
        calls.append((policy, offered_rps, slots))
        return real(models, policy, offered_rps, *args, slots=slots, **kwargs)

    monkeypatch.setattr(sim, "simulate", recorded)
    simulated = report.simulate_policies(results, ["slack", "fifo", "free"], [1.0], 0.5, 0)
    one_slot = sim.capacity_rps([sim.SimModel("m", {1: 0.002, 2: 0.003}, 2, 1.0, 0.05)])
    assert simulated["measured"]["capacity_rps"] == pytest.approx(2 * one_slot)
    assert simulated["measured"]["slots"] == {"slack": 2, "fifo": 1, "free": 2}
    assert {(policy, slots) for policy, _, slots in calls} == {("slack", 2), ("fifo", 1), ("free", 2)}
    assert all(offered == pytest.approx(2 * one_slot) for _, offered, _ in calls[:3])


def test_bench_scheduling_measures_every_policy_and_writes_its_report(weights_dir, tmp_path):
    command = [
        sys.executable,
        "-m",
        "easerve.cli",
        "bench",
        "scheduling",
        "--weights-dir",
        str(weights_dir),
        "--models",
        model_name("fixcls"),
        model_name("fixseg"),
        "--shares",
        "3",
        "1",
        "--deadline-factors",
        "25",
        "25",
        "--policies",
        "slack",
        "free",
        "--loads",
        "0.5",
        "2",
        "--patterns",
        "poisson",
        "--duration",
        "0.5",
        "--settle",
        "0",
        "--sim-duration",
        "1",
        "--out",
        str(tmp_path),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    page = (tmp_path / "bench_scheduling.md").read_text()
    figures = json.loads((tmp_path / "bench_scheduling.json").read_text())
    assert (tmp_path / "bench_scheduling.png").stat().st_size > 0
    assert set(figures["policies"]) == {"slack", "free"}
    assert [cell["load"] for cell in figures["policies"]["slack"]["cells"]] == [0.5, 2.0]
    assert all(cell["sent"] > 0 for policy in figures["policies"].values() for cell in policy["cells"])
    assert figures["capacity_rps"] > 0
    assert {row["clients"] for row in figures["closed_loop"]} == {16, 128}
    side_by_side = figures["low_load"]["p50_ms"]
    assert set(side_by_side) == {"slack", "free"}
    assert all(p50 > 0 for policy in side_by_side.values() for p50 in policy.values())
    assert "servers side by side" in page
    assert "### Targets" in page and "GPU-shaped projection (assumed, not measured)" in page
