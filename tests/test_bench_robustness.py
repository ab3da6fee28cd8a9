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
import pytest

from easerve.bench.robustness_probes import (
    REFUSED,
    RESET,
    TRANSPORT_OUTCOMES,
    RawConnection,
    RssSampler,
    raw_request,
    succeeded,
)
from easerve.bench.robustness_report import (
    REPORT_NAME,
    ScenarioResult,
    ShutdownRun,
    format_statuses,
    summary_table,
    twins_table,
)
from easerve.bench.robustness_scenarios import (
    FLOOD_CHUNK_TYPE,
    FULL,
    JPEG_COMMENT,
    QUICK,
    _judge_chunk_floods,
    _judge_client_leaves,
    _judge_loop_stalls,
    _judge_sa_memory,
    _judge_slow_body,
    _slow_body_args,
    attention_of,
    jpeg_marker_flood,
    metric_value,
    multipart,
    npy_huge_shape,
    ply_repeated_property,
    png_chunk_flood,
    small_jpeg,
    small_png,
)
from easerve.loadtest.server import tree_rss_bytes

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


def _quick_run(out: Path, scenarios: tuple[str, ...], timeout_s: float) -> dict:
    """`easerve bench robustness --quick` of `scenarios` against the bundled models: its JSON report."""
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
        *scenarios,
        "--out",
        str(out),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / f"{REPORT_NAME}.json").read_text())


def test_a_quick_run_reports_every_scenario_with_its_figures(tmp_path):
    report = _quick_run(tmp_path, QUICK_SCENARIOS, timeout_s=150)
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
    assert len(scenarios["malformed-500s"]["details"]["cases"]) == 10
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


# --- the attacks of issue 23 --------------------------------------------------------------------


def test_the_chunk_floods_are_valid_images_that_the_header_walk_refuses():
    from PIL import Image

    from easerve.service.codecs.image_headers import check_segments
    from easerve.service.errors import BadRequest

    png = png_chunk_flood(small_png(), len(small_png()) + 12 * 2000)
    jpeg = jpeg_marker_flood(small_jpeg(), len(small_jpeg()) + 4 * 2000)

    for flood, original in ((png, small_png()), (jpeg, small_jpeg())):
        assert len(flood) == len(original) + {png: 12, jpeg: 4}[flood] * 2000
        with Image.open(io.BytesIO(flood)) as image:
            image.load()
            assert image.size == (64, 64)
        check_segments(original)
        with pytest.raises(BadRequest):
            check_segments(flood)
    assert png.count(FLOOD_CHUNK_TYPE) == 2000 and jpeg.count(JPEG_COMMENT) == 2000


def test_metric_values_are_summed_over_matching_labels():
    text = (
        "# HELP easerve_http_requests_total x\n"
        'easerve_http_requests_total{code="499",model="pct-sa-tiny"} 3.0\n'
        'easerve_http_requests_total{code="200",model="pct-sa-tiny"} 5.0\n'
        'easerve_http_requests_total{code="499",model="pct-ea-tiny"} 7.0\n'
        'nv_inference_count_total{model="pct-sa-tiny"} 5.0\n'
    )

    assert metric_value(text, "easerve_http_requests_total", model="pct-sa-tiny", code="499") == 3.0
    assert metric_value(text, "easerve_http_requests_total", code="499") == 10.0
    assert metric_value(text, "nv_inference_count_total", model="pct-sa-tiny") == 5.0
    assert metric_value(text, "nv_inference_count_total", model="eamlp-ea-tiny") == 0.0


def _twin(model: str, **changes) -> dict:
    twin = {
        "model": model,
        "attention": attention_of(model),
        "input": "[1, 8192, 3]",
        "requests": 4,
        "statuses": {"200": 3, "503": 1},
        "503_without_retry_after": 0,
        "median_answer_s": 0.5,
        "slowest_answer_s": 1.5,
        "attack_s": 1.5,
        "predicted_item_mb": 363.0,
        "rss_start_mb": 400.0,
        "peak_rss_mb": 1500.0,
        "given_back_s": 1.0,
        "rss_after_mb": 420.0,
        "bystanders_sent": 3,
        "bystanders_lost": 0,
        "worst_bystander_ms": 80.0,
    }
    return {**twin, **changes}


def _memory_result(*changed: dict) -> ScenarioResult:
    twins = {model: _twin(model) for model in ("pct-ea-tiny", "pct-sa-tiny", "eanet-ea-tiny", "eanet-sa-tiny")}
    twins["eanet-sa-tiny"]["statuses"] = {"413": 4}
    for twin in changed:
        twins[twin["model"]] = twin
    result = ScenarioResult("sa-memory", "", valid_sent=10, rss_before_mb=400.0)
    result.details.update(twins=list(twins.values()), budget_mb=1536.0)
    return result


def test_the_sa_memory_judge_fails_each_broken_promise():
    assert _judge_sa_memory(_memory_result())
    broken = [
        _twin("pct-sa-tiny", peak_rss_mb=400.0 + 1536.0 + 1),  # past the budget
        _twin("pct-sa-tiny", given_back_s=None),  # kept
        _twin("pct-sa-tiny", statuses={"503": 4}),  # served nothing
        _twin("pct-sa-tiny", statuses={"200": 3, "500": 1}),
        _twin("pct-sa-tiny", statuses={"200": 3, RESET: 1}),
        _twin("pct-sa-tiny", **{"503_without_retry_after": 1}),
        _twin("pct-ea-tiny", bystanders_lost=1),
    ]
    for twin in broken:
        assert not _judge_sa_memory(_memory_result(twin)), twin
    missing = _memory_result()
    missing.details["twins"] = missing.details["twins"][:3]
    assert not _judge_sa_memory(missing)


def test_the_twins_table_sets_ea_beside_sa():
    table = twins_table([_memory_result(), ScenarioResult("shutdown", "")])

    rows = {row[0]: row for row in table.rows}
    assert [row[1] for row in table.rows] == ["EA", "SA", "EA", "SA"]
    assert rows["pct-sa-tiny"][3:8] == ("200×3, 503", "0.50 / 1.50", "363", "1,100", "1.00")
    assert twins_table([ScenarioResult("shutdown", "")]) is None


def test_the_chunk_flood_judge_needs_refusals_and_timely_bystanders():
    def result(statuses=None, worst_ms=300.0, lost=0, peak=600.0) -> ScenarioResult:
        outcome = ScenarioResult("chunk-floods", "", valid_sent=20, valid_lost=lost, rss_before_mb=400.0)
        outcome.attack_statuses = statuses or {"png-chunks 400": 4, "jpeg-com 400": 4}
        outcome.peak_rss_mb = peak
        outcome.details.update(timed_bystanders={"200": 20}, worst_timed_bystander_ms=worst_ms, bystander_limit_s=2.5)
        return outcome

    assert _judge_chunk_floods(result())
    assert not _judge_chunk_floods(result(statuses={"png-chunks 504": 4}))
    assert not _judge_chunk_floods(result(statuses={"png-chunks 200": 4}))
    assert not _judge_chunk_floods(result(worst_ms=2600.0))
    assert not _judge_chunk_floods(result(lost=1))
    assert not _judge_chunk_floods(result(peak=400.0 + 1536.0 + 1))


def test_the_loop_stall_judge_needs_every_padded_request_answered_and_timely_probes():
    def result(statuses=None, p99=40.0, lost=0) -> ScenarioResult:
        outcome = ScenarioResult("loop-stalls", "", valid_sent=50, valid_lost=lost)
        outcome.attack_statuses = statuses or {"200": 128}
        outcome.details.update(probe_p99_ms=p99, probe_p99_limit_ms=250.0)
        return outcome

    assert _judge_loop_stalls(result())
    assert not _judge_loop_stalls(result(statuses={"200": 120, "504": 8}))
    assert not _judge_loop_stalls(result(p99=300.0))
    assert not _judge_loop_stalls(result(p99=None))
    assert not _judge_loop_stalls(result(lost=1))


def test_the_client_leaves_judge_needs_499s_and_nothing_computed_for_them():
    def result(**changes) -> ScenarioResult:
        outcome = ScenarioResult("client-leaves", "", valid_sent=3)
        details = {
            "leavers": 2,
            "left": {"left": 2},
            "blocker": "200",
            "blocker_s": 2.0,
            "all_left_after_s": 0.6,
            "metrics_delta": {"499": 2.0, "200": 3.0, "computed": 3.0},
        }
        outcome.details.update({**details, **changes})
        return outcome

    assert _judge_client_leaves(result())
    assert not _judge_client_leaves(result(metrics_delta={"499": 0.0, "200": 5.0, "computed": 5.0}))
    assert not _judge_client_leaves(result(metrics_delta={"499": 2.0, "200": 3.0, "computed": 5.0}))
    assert not _judge_client_leaves(result(blocker_s=0.5))  # the blocker was done: nothing was queued
    assert not _judge_client_leaves(result(left={"answered 200 before leaving": 2}))


def test_the_slow_body_judge_needs_a_timely_408_on_every_connection():
    def result(statuses, closed) -> ScenarioResult:
        outcome = ScenarioResult("slow-body", "", valid_sent=3, attack_statuses=statuses)
        outcome.details.update(body_timeout_s=2.0, closed_after_s=closed, connections=2)
        return outcome

    assert _judge_slow_body(result({"408 closed": 2}, [2.1, 2.2]))
    assert not _judge_slow_body(result({"504 closed": 2}, [2.1, 2.2]))
    assert not _judge_slow_body(result({"408 closed": 1, "no answer kept open": 1}, [2.1]))
    assert not _judge_slow_body(result({"408 closed": 2}, [2.1, 4.5]))
    assert _slow_body_args(QUICK) == ("--body-timeout", "2") and _slow_body_args(FULL) == ()


def test_the_sampler_keeps_a_window_peak_beside_the_whole_peak():
    sampler = RssSampler(os.getpid(), cap_mb=0)
    sampler.peak_bytes = 10**12

    now = sampler.start_window()

    assert 10 < now < 10**6 and sampler.window_peak_mb == pytest.approx(now, rel=0.1)
    assert sampler.peak_bytes == 10**12


NEW_QUICK_SCENARIOS = ("sa-memory", "chunk-floods", "loop-stalls", "client-leaves", "slow-body")


def test_a_quick_run_of_the_new_attacks_reports_their_figures(tmp_path):
    report = _quick_run(tmp_path, NEW_QUICK_SCENARIOS, timeout_s=240)
    scenarios = {scenario["name"]: scenario for scenario in report["scenarios"]}
    assert list(scenarios) == list(NEW_QUICK_SCENARIOS)
    for name, scenario in scenarios.items():
        outcome = scenario["outcome"]
        assert not outcome.startswith(("bench error", "could not start")), f"{name}: {outcome}"
        assert scenario["attack_statuses"] and scenario["findings"], name
        assert isinstance(scenario["target_met"], bool) or scenario["target_met"] is None

    twins = scenarios["sa-memory"]["details"]["twins"]
    assert [twin["attention"] for twin in twins] == ["EA", "SA", "EA", "SA"]
    for twin in twins:
        assert sum(twin["statuses"].values()) == twin["requests"] > 0
        assert twin["peak_rss_mb"] > 0 and twin["predicted_item_mb"] > 0
    floods = scenarios["chunk-floods"]["details"]
    assert set(floods["flood_bytes"]) == {"png-chunks", "jpeg-com", "png-chunks-small"}
    assert sum(floods["timed_bystanders"].values()) == 20
    stalls = scenarios["loop-stalls"]["details"]
    assert sum(scenarios["loop-stalls"]["attack_statuses"].values()) == 4 * 2
    assert sum(stalls["probes"].values()) > 0 and stalls["probe_p50_ms"] <= stalls["probe_p99_ms"]
    assert set(scenarios["client-leaves"]["details"]["metrics_delta"]) == {"499", "200", "computed"}
    assert scenarios["slow-body"]["details"]["body_timeout_s"] == 2.0

    markdown = (tmp_path / f"{REPORT_NAME}.md").read_text()
    assert "EA vs SA twins: working memory beside time" in markdown
    assert "| pct-sa-tiny | SA |" in markdown
