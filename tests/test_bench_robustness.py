"""`easerve bench robustness`: its attack payloads are what they claim to be, its figures format,
and a --quick run of a few scenarios against the bundled models writes a report in which every
scenario has its figures. Whether the service passes the scenarios is not asserted here."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from easerve.bench.robustness_probes import (
    REFUSED,
    RESET,
    TRANSPORT_OUTCOMES,
    RawConnection,
    raw_request,
    succeeded,
    tree_rss_bytes,
)
from easerve.bench.robustness_report import REPORT_NAME, ScenarioResult, ShutdownRun, format_statuses, summary_table
from easerve.bench.robustness_scenarios import multipart, npy_huge_shape, ply_repeated_property

REPO = Path(__file__).resolve().parents[1]
QUICK_SCENARIOS = ("batch-poisoning", "malformed-500s", "shutdown")


def test_the_npy_payload_is_152_bytes_claiming_ten_billion_points():
    data = npy_huge_shape()
    stream = io.BytesIO(data)

    version = np.lib.format.read_magic(stream)
    shape, _, dtype = np.lib.format.read_array_header_1_0(stream)

    assert (len(data), version, shape, dtype) == (152, (1, 0), (10**10, 3), np.dtype("<f4"))


def test_the_ply_payload_repeats_a_vertex_property():
    header = ply_repeated_property().split(b"end_header\n")[0].decode()
    properties = [line.split()[-1] for line in header.splitlines() if line.startswith("property")]

    assert "binary_little_endian" in header
    assert sorted(properties) == ["x", "x", "y", "z"]


def test_multipart_carries_every_file():
    body, content_type = multipart([b"first", b"second"])
    boundary = content_type.split("boundary=")[1]

    assert body.count(f"--{boundary}\r\n".encode()) == 2 and body.endswith(f"--{boundary}--\r\n".encode())


def test_outcomes_and_statuses_format():
    assert succeeded("200") and succeeded("204") and not succeeded("413") and not succeeded(RESET)
    assert format_statuses({"413": 4, "200": 12, "ply 500": 1}) == "200×12, 413×4, ply 500"
    assert format_statuses({}) == "-"


def test_the_summary_shows_shutdown_runs_and_missing_figures():
    shutdown = ScenarioResult("shutdown", "", shutdown_runs=[ShutdownRun(8, sent=10, lost=2), ShutdownRun(8, sent=5)])
    attack = ScenarioResult("heavy-images", "", valid_sent=20, valid_lost=1, attack_statuses={"classify 413": 4})
    attack.peak_rss_mb = 1234.4

    rows = {row[0]: row for row in summary_table([shutdown, attack]).rows}

    assert rows["shutdown"][6] == "2 / 0 (of 15 sent)" and rows["shutdown"][1] == "-"
    assert rows["heavy-images"][1:5] == ("1/20", "classify 413×4", "1,234", "-")


def test_the_rss_of_a_process_tree_is_read_from_proc():
    assert tree_rss_bytes(os.getpid()) > 10 * 1024 * 1024
    assert tree_rss_bytes(2**22 + 12345) == 0  # no such process


def test_a_raw_connection_reads_an_answer_and_sees_the_close():
    async def scenario() -> tuple[int, bytes, bool]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            connection = await RawConnection.open(port)
            response = await connection.exchange(raw_request("GET", "/healthz", port), 5.0)
            closed, _ = await connection.wait_closed_by_server(5.0)
            connection.close()
        return response.status, response.body, response.closes and closed

    assert asyncio.run(scenario()) == (408, b"no", True)


def _parseable_outcome(key: str) -> bool:
    """ "413", "reset", "classify 413", "slow 408 kept open": a status or transport outcome."""
    return any(word.isdigit() or word in TRANSPORT_OUTCOMES for word in key.split())


def test_a_quick_run_reports_every_scenario_with_its_figures(tmp_path):
    command = [
        sys.executable,
        "-m",
        "easerve.cli",
        "bench",
        "robustness",
        "--quick",
        "--weights-dir",
        str(REPO / "weights"),
        "--scenarios",
        *QUICK_SCENARIOS,
        "--out",
        str(tmp_path),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=150)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / f"{REPORT_NAME}.json").read_text())
    scenarios = {scenario["name"]: scenario for scenario in report["scenarios"]}
    assert list(scenarios) == list(QUICK_SCENARIOS)
    assert report["machine"]
    for name, scenario in scenarios.items():
        outcome = scenario["outcome"]
        assert not outcome.startswith(("bench error", "could not start")), f"{name}: {outcome}"
        assert scenario["completed"] or "server" in outcome, f"{name}: {outcome}"
        assert scenario["attack_statuses"], name
        assert all(
            isinstance(count, int) and _parseable_outcome(key) for key, count in scenario["attack_statuses"].items()
        )
        assert isinstance(scenario["peak_rss_mb"], float) and scenario["peak_rss_mb"] > 0, name
        assert isinstance(scenario["target_met"], bool) or scenario["target_met"] is None
        assert scenario["findings"], name

    for name in ("batch-poisoning", "malformed-500s"):
        scenario = scenarios[name]
        assert isinstance(scenario["valid_sent"], int) and scenario["valid_sent"] > scenario["bystander_sent"] > 0
        assert isinstance(scenario["valid_lost"], int) and 0 <= scenario["valid_lost"] <= scenario["valid_sent"]
        assert isinstance(scenario["worst_bystander_ms"], float) and scenario["worst_bystander_ms"] > 0
        if scenario["completed"]:
            assert isinstance(scenario["rss_after_mb"], float) and scenario["rss_after_mb"] > 0
    assert len(scenarios["malformed-500s"]["details"]["cases"]) == 5
    assert set(scenarios["batch-poisoning"]["details"]["poisoned"]) == {
        "eagan label=99",
        "eanet H=0",
        "pct points [1,0,3]",
        "eadet [1,3,1,1]",
    }

    (run,) = scenarios["shutdown"]["shutdown_runs"]
    assert run["clients"] == 8 and run["sent"] > 0
    assert isinstance(run["lost"], int) and isinstance(run["refused"], int)
    assert run["exit_code"] is None or isinstance(run["exit_code"], int)
    assert sum(run["answered"].values()) + run["lost"] + run["refused"] == run["sent"]
    assert scenarios["shutdown"]["shutdown_lost"] == [run["lost"]]
    assert REFUSED in scenarios["shutdown"]["attack_statuses"] or run["refused"] == 0

    markdown = (tmp_path / f"{REPORT_NAME}.md").read_text()
    assert "| scenario | valid lost | attack statuses | peak RSS MB | RSS after MB |" in markdown
    assert all(f"| {name} |" in markdown for name in QUICK_SCENARIOS)
