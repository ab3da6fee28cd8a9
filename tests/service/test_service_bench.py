"""`easerve bench serve` on the fixture models: each transport's prebuilt body is answered by the
service and its naive baseline as the raw body is, the report shows the server's CPU per request
and what was not measured, easerve behind N HTTP workers is one more server set beside the
one-process one, and a short run of the whole benchmark writes its report."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import psutil
import pytest
from onnx_fixtures import model_name
from service_helpers import TestClient, image_bytes, make_settings, wait_until

from easerve.bench import serve as bench_serve
from easerve.bench import serve_report
from easerve.bench.serve_load import MULTIPART_BOUNDARY, RAW, TRANSPORTS, LoadRun, image_workload, transport_body
from easerve.bench.serve_naive import create_naive_app
from easerve.bench.serve_offline import OfflineFigures
from easerve.bench.serve_peers import DEFAULT_PEERS_PYTHON, PEERS
from easerve.loadtest.server import free_port, running_server_process
from easerve.service.model_files import discover_models
from easerve.service.runners.ort import OrtRunner

REPO = Path(__file__).resolve().parents[2]
CLASSIFIER = model_name("fixcls")
SEGMENTER = model_name("fixseg")
ROUTES = (("/v1/classify", CLASSIFIER), ("/v1/segment", SEGMENTER))
# The naive server answers every image route the service has a post-processing of.
NAIVE_ROUTES = (*ROUTES, ("/v1/detect", model_name("fixdet")), ("/v1/segment/instances", model_name("fixinst")))


@pytest.fixture(scope="module")
def naive(weights_dir):
    settings = make_settings(weights_dir)
    runners = {
        files.name: (OrtRunner(files, settings, 1), files.manifest)
        for files in discover_models([weights_dir], [model for _, model in NAIVE_ROUTES])
    }
    with TestClient(create_naive_app(runners)) as naive_client:
        yield naive_client
    for runner, _ in runners.values():
        runner.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_each_transport_is_answered_as_the_raw_body_by_the_service_and_the_naive_server(client, naive, transport):
    png = image_bytes((255, 0, 0))
    for route, model in NAIVE_ROUTES:
        raw = client.post(route, params={"model": model}, content=png, headers={"content-type": "image/png"})
        assert raw.status_code == 200, raw.text
        workload = image_workload(route, model, png, transport)
        headers = {"content-type": workload.content_type}
        for server in (client, naive):
            answer = server.post(route, params={"model": model}, content=workload.body, headers=headers)
            assert answer.status_code == 200, answer.text
            assert answer.json()["results"] == raw.json()["results"]


def test_the_naive_server_refuses_what_the_service_refuses(naive):
    answer = naive.post(
        "/v1/classify", params={"model": CLASSIFIER}, content=b"{}", headers={"content-type": "text/csv"}
    )
    assert answer.status_code == 415
    assert "error" in answer.json()


def test_the_transport_bodies_carry_the_image_unchanged():
    png = image_bytes((0, 0, 255))
    assert transport_body(png, RAW) == (png, "image/png")
    body, content_type = transport_body(png, "multipart")
    assert content_type == f"multipart/form-data; boundary={MULTIPART_BOUNDARY}"
    assert png in body and body.endswith(f"--{MULTIPART_BOUNDARY}--\r\n".encode())
    body, content_type = transport_body(png, "json")
    assert content_type == "application/json" and list(json.loads(body)) == ["image"]
    with pytest.raises(ValueError, match="unknown transport"):
        transport_body(png, "carrier-pigeon")
    with pytest.raises(ValueError, match="boundary"):
        transport_body(png + MULTIPART_BOUNDARY.encode(), "multipart")


def test_the_cli_offers_exactly_the_transports_the_load_can_send():
    assert bench_serve.TRANSPORT_CHOICES == TRANSPORTS
    assert set(bench_serve.DEFAULT_TRANSPORTS) <= set(TRANSPORTS)


def _run(concurrency: int, throughput: float, cpu_ms: float | None) -> LoadRun:
    """A one-second run answering `throughput` requests (p50 2 ms), `cpu_ms` of server CPU each."""
    answered = int(throughput)
    cpu_s = None if cpu_ms is None else cpu_ms * answered / 1000
    return LoadRun(concurrency, 1.0, (2.0,) * answered, 0, 1.0, cpu_s)


def _results(
    task: str, transports: tuple[str, ...], cpu_ms: float | None, http_workers: tuple[int, ...] = (1,)
) -> serve_report.ModelResults:
    """At 32 clients the dynamic-batching servers answer 90 req/s (N HTTP workers: 90 * N, mean
    batch 4 * N), the others 30."""
    offline = OfflineFigures(max_batch_size=8, ceiling_per_s=100.0, ceiling_cpu_ms=0.8, model_ms=0.5, pipeline_ms=1.5)

    def runs_of(server: str) -> list[LoadRun]:
        if not server.startswith(serve_report.DYNAMIC):
            return [_run(1, 50, cpu_ms), _run(32, 30, cpu_ms)]
        workers = serve_report.http_workers_of(server)
        return [_run(1, 50, cpu_ms), replace(_run(32, 90 * workers, cpu_ms), mean_batch_size=4.0 * workers)]

    runs = {
        (server, transport): runs_of(server)
        for transport in transports
        for server in serve_report.server_labels(http_workers)
    }
    return serve_report.ModelResults(CLASSIFIER if task == "classification" else SEGMENTER, task, offline, runs)


def test_the_load_table_shows_the_server_cpu_per_request_and_the_transport_when_several():
    one = serve_report.load_table(_results("classification", (RAW,), 0.75))
    assert "server CPU ms/req" in one.headers and "transport" not in one.headers
    column = one.headers.index("server CPU ms/req")
    assert {row[column] for row in one.rows} == {"0.75"}
    assert len(one.rows) == 2 * len(serve_report.server_labels())

    several = serve_report.load_table(_results("classification", ("multipart", "json"), None))
    transport = several.headers.index("transport")
    assert {row[transport] for row in several.rows} == {"multipart", "json"}
    assert {row[several.headers.index("server CPU ms/req")] for row in several.rows} == {"-"}
    assert len(several.rows) == 2 * 2 * len(serve_report.server_labels())
    assert len(serve_report.yardstick_table([_results("segmentation", ("raw", "json"), 1.0)]).headers) == 3


def test_the_servers_are_one_dynamic_batching_server_per_http_worker_count_first():
    assert list(serve_report.server_labels()) == ["dynamic", "batch1", "naive"]
    assert list(serve_report.server_labels(peers=["triton"]))[-1] == "triton"
    labels = serve_report.server_labels([2, 1, 4, 2])
    assert list(labels) == ["dynamic", "dynamic-http-workers-2", "dynamic-http-workers-4", "batch1", "naive"]
    assert labels["dynamic-http-workers-2"] == "easerve (dynamic batching, 2 HTTP workers)"
    assert [serve_report.http_workers_of(server) for server in labels] == [1, 2, 4, 1, 1]
    assert serve_report.worker_counts([3, 3]) == [1, 3]


def test_only_the_extra_dynamic_batching_servers_get_http_workers(tmp_path):
    args = argparse.Namespace(weights_dirs=[tmp_path], spinning=False, threads=1, instances=2)
    commands = {
        server: bench_serve._server_command(server, args, [CLASSIFIER], 8000)
        for server in serve_report.server_labels([1, 2])
    }
    two = commands["dynamic-http-workers-2"]
    assert two[two.index("--http-workers") + 1] == "2"
    assert two[: two.index("--http-workers")] == commands["dynamic"]
    assert "--max-batch-size" not in two and "--instances" in two
    assert all("--http-workers" not in commands[server] for server in ("dynamic", "batch1", "naive"))
    assert commands["batch1"][-2:] == ["--max-batch-size", "1"]


def test_the_report_shows_the_http_worker_server_and_sets_it_beside_one_worker():
    results = _results("classification", (RAW, "json"), 0.5, http_workers=(1, 2))
    table = serve_report.load_table(results)
    label = "easerve (dynamic batching, 2 HTTP workers)"
    server = table.headers.index("server")
    assert [row[server] for row in table.rows[:4]] == [
        "easerve (dynamic batching)",
        label,
        "easerve, max batch 1",
        "naive FastAPI + onnxruntime",
    ]
    assert len(table.rows) == 2 * 2 * 4
    (extra,) = [row for row in table.rows if row[server] == label and row[0] == "32" and row[2] == RAW]
    assert extra[table.headers.index("req/s")] == "180.0"
    assert extra[table.headers.index("mean batch")] == "8.00"
    assert extra[table.headers.index("server CPU ms/req")] == "0.50"
    assert extra[table.headers.index("req/s over naive")] == "6.0x"  # 180 / 30

    side_by_side = serve_report.http_workers_table([results, _results("segmentation", (RAW,), None)])
    headers = side_by_side.headers
    assert len(side_by_side.rows) == 2  # the classifier's two transports; the segmenter ran no N = 2
    row = dict(zip(headers, side_by_side.rows[0], strict=True))
    assert row["model"] == CLASSIFIER and row["transport"] == RAW
    assert row["clients"] == "32" and row["N"] == "2"
    assert (row["req/s (1)"], row["req/s (N)"], row["req/s N/1"]) == ("90.0", "180.0", "2.00x")
    assert (row["mean batch (1)"], row["mean batch (N)"], row["mean batch N/1"]) == ("4.00", "8.00", "2.00x")
    assert serve_report.http_workers_table([_results("classification", (RAW,), 0.5)]) is None

    # The targets stay those of the one-process server: 90 / 30 = 3x, not 6x.
    (speedup,) = [
        target
        for target in serve_report.target_checks([results])
        if "[raw]" in target.description and "naive server at 32" in target.description
    ]
    assert speedup.value == "3.0x"


def test_targets_not_measured_are_said_so_and_never_met():
    targets = serve_report.target_checks([_results("classification", (RAW,), 0.75)])
    lines = serve_report.target_lines(targets)
    by_text = dict(zip(lines, targets, strict=True))

    def verdict(*words: str) -> bool | None:
        (target,) = [target for line, target in by_text.items() if all(word in line for word in words)]
        return target.met

    assert verdict("[raw]", "server CPU") is True  # 0.75 ms <= 1.0 ms
    assert verdict("[multipart]", "server CPU") is None
    assert verdict("[json]", "server CPU") is None
    assert verdict("[raw]", "naive server at 32 clients") is True  # 90 / 30 = 3x
    assert verdict("[raw]", "naive server at 64 clients") is None  # 64 clients did not run
    assert verdict("[raw]", "offline ceiling") is True  # 90 / 100 >= 0.7 for classification
    assert verdict("[raw]", "lone client") is True  # 2.0 - 1.5 ms <= 1.0 ms
    assert sum(line.endswith("- not measured") for line in lines) == 3
    assert all(line.endswith("- not measured") == (target.met is None) for line, target in by_text.items())

    segmentation = serve_report.target_checks([_results("segmentation", (RAW,), 5.0)])
    assert not any("server CPU" in target.description for target in segmentation)
    (ceiling,) = [target for target in segmentation if "offline ceiling" in target.description]
    assert ceiling.met is True and ">= 0.85" in ceiling.description  # 0.90


def test_the_plot_draws_runs_with_and_without_cpu_figures(tmp_path):
    path = tmp_path / "plot.png"
    serve_report.plot(
        [_results("classification", ("raw", "json"), None, (1, 2)), _results("segmentation", (RAW,), 1.0)], path
    )
    assert path.stat().st_size > 0


def test_the_report_sets_easerve_beside_its_peers():
    results = _results("classification", ("json",), None)
    slow_tail = LoadRun(32, 1.0, (2.0,) * 99 + (50.0,), 0, None)
    results.runs[("triton", "json")] = [_run(1, 40, None), slow_tail]  # p50 2 ms; 100 req/s, one slow
    results.runs[("litserve", "json")] = [replace(_run(1, 40, None), latencies_ms=(1.0,) * 40), _run(32, 60, None)]
    table = serve_report.peers_table([results])
    rows = [dict(zip(table.headers, row, strict=True)) for row in table.rows]
    assert [(row["clients"], row["peer"]) for row in rows] == [
        ("1", "Triton (PyTriton)"),
        ("1", "LitServe"),
        ("32", "Triton (PyTriton)"),
        ("32", "LitServe"),
    ]
    assert (
        rows[2]["req/s"] == "90.0" and rows[2]["peer req/s"] == "100.0" and rows[2]["easerve / peer req/s"] == "0.90x"
    )
    assert rows[3]["easerve / peer req/s"] == "1.50x"  # 90 / 60
    verdicts = {target.description: target.met for target in serve_report.peer_targets([results])}

    def verdict(peer: str, *words: str) -> bool | None:
        (met,) = [met for text, met in verdicts.items() if f"against {peer}" in text and all(w in text for w in words)]
        return met

    assert verdict("triton", "req/s", "32 clients") is False  # 90 < 100
    assert verdict("triton", "p99", "32 clients") is True  # 2 ms <= the peer's slow tail
    assert verdict("litserve", "req/s", "32 clients") is True
    assert verdict("triton", "req/s", "64 clients") is None  # not measured
    assert verdict("litserve", "1 client") is False  # 2 ms against the peer's 1 ms
    assert verdict("triton", "1 client") is False  # 2 ms against 2 ms: not below
    assert serve_report.peers_table([_results("classification", ("json",), None)]) is None


def test_a_peer_its_environment_cannot_run_is_left_out_and_said_so(tmp_path, capsys):
    args = argparse.Namespace(peers=["triton", "litserve"], peers_python=tmp_path / "no-python", transports=["raw"])
    note = bench_serve._choose_peers(args)
    assert args.peers == [] and args.transports == ["raw"]
    assert "peers measured: none" in note and "triton: no " in note and "make peers" in note
    assert "peer litserve left out" in capsys.readouterr().out


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _peers_python() -> Path:
    python = REPO / DEFAULT_PEERS_PYTHON
    if not python.is_file():
        pytest.skip(f"no {DEFAULT_PEERS_PYTHON}: `make peers` builds it (`make test` does)")
    return python


@pytest.mark.parametrize("peer", list(PEERS))
def test_each_peer_answers_the_json_image_as_the_service_answers_the_raw_body(client, weights_dir, tmp_path, peer):
    python = _peers_python()
    png = image_bytes((255, 0, 0))
    port = free_port()
    command = PEERS[peer].command(python, [CLASSIFIER, SEGMENTER], port, 1, ["--weights-dir", str(weights_dir)])
    url = f"http://127.0.0.1:{port}"
    ready = PEERS[peer].ready_path.format(model=SEGMENTER)  # the last model the peer loads
    with running_server_process(command, url, tmp_path / "peer.log", 120.0, cwd=REPO, ready_path=ready) as server:
        for route, model in ROUTES:
            expected = client.post(route, params={"model": model}, content=png, headers={"content-type": "image/png"})
            answer = httpx.post(
                f"{url}{PEERS[peer].route.format(model=model)}",
                content=PEERS[peer].request_body(png, transport_body(png, "json")[0]),
                headers={"content-type": "application/json"},
                timeout=30.0,
            )
            assert answer.status_code == 200, answer.text
            if peer == "triton":
                (output,) = answer.json()["outputs"]
                results = [json.loads(output["data"][0])]
            else:
                results = answer.json()["results"]
            assert results == expected.json()["results"]
        tree = [server.pid, *(child.pid for child in psutil.Process(server.pid).children(recursive=True))]
    # Stopping the peer stops every process it started (LitServe's workers, Triton's server).
    wait_until(lambda: not any(map(_running, tree)), 30.0, "the peer's processes to end")


def test_bench_serve_measures_every_server_and_writes_its_report(weights_dir, tmp_path):
    command = [
        sys.executable,
        "-m",
        "easerve.cli",
        "bench",
        "serve",
        "--weights-dir",
        str(weights_dir),
        "--concurrency",
        "1",
        "4",
        "--transports",
        "raw",
        "json",
        "--duration",
        "0.4",
        "--warmup",
        "0.1",
        "--threads",
        "1",
        "--out",
        str(tmp_path),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = (tmp_path / "bench_serve.md").read_text()
    assert (tmp_path / "bench_serve.png").stat().st_size > 0
    for model in (CLASSIFIER, SEGMENTER):
        assert f"### {model} (" in report
    header = next(line for line in report.splitlines() if line.startswith("| clients |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert "transport" in columns and "server CPU ms/req" in columns
    rows = [line for line in report.splitlines() if line.startswith(("| 1 |", "| 4 |"))]
    assert len(rows) == 2 * 2 * 2 * 3  # models x concurrencies x transports x servers
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    assert all(row[-1] == "0" for row in cells), "some requests failed"
    assert all(float(row[columns.index("server CPU ms/req")]) >= 0 for row in cells)
    assert {row[columns.index("transport")] for row in cells} == {"raw", "json"}
    assert "service / ceiling" in report and "### Targets" in report
    assert "[multipart]: easerve server CPU per request at 32 clients (target <= 1.0 ms): - - not measured" in report
    assert "server CPU" in result.stdout


def test_bench_large_images_takes_by_default_the_ea_model_of_each_task_that_draws_an_overlay():
    from easerve.artifacts.manifest import load_manifest
    from easerve.artifacts.tasks import TASKS
    from easerve.bench.large_images import _routes

    routes = _routes([REPO / "weights"], None)
    manifests = [load_manifest(REPO / "weights" / name) for name in routes]
    assert sorted(manifest.task for manifest in manifests) == sorted(
        name for name, spec in TASKS.items() if spec.overlay
    )
    assert all(manifest.attention == "ea" for manifest in manifests)
    assert all(routes[manifest.name] == manifest.spec.path for manifest in manifests)


def test_bench_large_images_times_every_overlay_case_and_writes_its_report(tmp_path):
    from easerve.bench.large_images import CASES

    bundled = REPO / "weights"
    command = [sys.executable, "-m", "easerve.cli", "bench", "large-images", "--weights-dir", str(bundled)]
    command += ["--models", "eanet-ea-tiny", "--size", "400", "300", "--repeats", "1", "--formats", "jpeg"]
    command += ["--out", str(tmp_path)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "bench_large_images.json").read_text())["rows"]
    assert [row["case"] for row in rows] == list(CASES)
    assert all(0 < row["best_s"] <= row["median_s"] and row["answer_bytes"] > 0 for row in rows)
    sizes = {row["case"]: row["answer_bytes"] for row in rows}
    assert sizes["overlay=false"] < sizes["overlay=true&overlay_format=jpeg"] < sizes["overlay=true"]
    assert "| eanet-ea-tiny | jpeg | `overlay=true` |" in (tmp_path / "bench_large_images.md").read_text()
    refused = subprocess.run([*command[:-2], "--models", "eamlp-ea-tiny"], cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and "draws an overlay" in refused.stdout
