"""The load test: its request bodies, its locust users, locust's CSVs read back, the report, and
a short headless locust run of every endpoint against the real service on loopback."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from easerve.artifacts.manifest import discover_manifests, load_manifest
from easerve.loadtest.endpoints import ENDPOINTS, model_selector, prepared_requests, user_class
from easerve.loadtest.report import REPORT_FILE, RUNS_FILE, ReportContext, ratio_table, write_report
from easerve.loadtest.resized_models import write_resized_models
from easerve.loadtest.samples import load_samples
from easerve.loadtest.server import local_server
from easerve.loadtest.stats import load_runs, read_run_stats

REPO = Path(__file__).resolve().parents[1]
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"

STATS_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)


def write_stats_csv(path: Path, requests: int, failures: int, rps: float, p50: int, p95: int, p99: int) -> Path:
    """A locust `_stats.csv` (as locust 2.x writes it) with one endpoint row and the total."""
    percentiles = f"{p50},{p50},{p50},{p50},{p95},{p95},{p99},{p99},{p99},{p99},{p99}"
    rows = [
        STATS_HEADER,
        f"POST,/v1/segment,{requests},{failures},{p50},{p50 * 1.1},{p50 / 2},{p99},1200,{rps},0.0,{percentiles}",
        f",Aggregated,{requests},{failures},{p50},{p50 * 1.1},{p50 / 2},{p99},1200,{rps},0.0,{percentiles}",
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def segment_runs(tmp_path):
    """EA twice as fast as SA at 1 and 8 users, from recorded CSVs."""
    runs = []
    for users in (1, 8):
        for kind, p95, rps in (("ea", 100 * users, 40.0), ("sa", 250 * users, 16.0)):
            csv = write_stats_csv(tmp_path / f"{kind}{users}_stats.csv", 600, 0, rps, p95 // 2, p95, p95 * 2)
            runs.append(read_run_stats(csv, "segment", kind, users, f"eanet-{kind}-tiny"))
    return runs


def test_run_stats_come_from_the_aggregated_row(tmp_path):
    csv = write_stats_csv(tmp_path / "run_stats.csv", requests=480, failures=3, rps=7.5, p50=120, p95=300, p99=450)
    run = read_run_stats(csv, "segment", "sa", 32, "eanet-sa-tiny")
    assert (run.requests, run.failures, run.requests_per_s) == (480, 3, 7.5)
    assert (run.p50_ms, run.p95_ms, run.p99_ms) == (120, 300, 450)
    assert (run.task, run.attention, run.users, run.model) == ("segment", "sa", 32, "eanet-sa-tiny")


def test_a_run_where_nothing_completed_has_no_percentiles(tmp_path):
    csv = tmp_path / "empty_stats.csv"
    csv.write_text(STATS_HEADER + "\n,Aggregated,0,0,0,0,0,0,0,0,0," + ",".join(["N/A"] * 11) + "\n")
    run = read_run_stats(csv, "detect", "ea", 1, "eadet-ea-tiny")
    assert run.requests == 0 and np.isnan(run.p95_ms)


def test_a_csv_without_the_aggregated_row_is_rejected(tmp_path):
    csv = tmp_path / "other.csv"
    csv.write_text(STATS_HEADER + "\nPOST,/v1/segment,1,0,1,1,1,1,1,1,0,1,1,1,1,1,1,1,1,1,1,1\n")
    with pytest.raises(ValueError, match="Aggregated"):
        read_run_stats(csv, "segment", "ea", 1, "m")


def test_ratio_table_puts_sa_over_ea_latency_and_ea_over_sa_throughput(segment_runs):
    table = ratio_table(segment_runs)
    assert "| segment | 1 | 2.50x | 2.50x |" in table
    assert "| segment | 8 | 2.50x | 2.50x |" in table


def test_report_names_its_provenance_and_links_its_plots(segment_runs, tmp_path):
    context = ReportContext(
        date="2026-11-22T10:00+00:00",
        machine="Test CPU, 2 CPUs",
        backend="onnxruntime (CPUExecutionProvider)",
        model_inputs={"eanet-ea-tiny": "512x512", "eanet-sa-tiny": "512x512"},
        host="http://127.0.0.1:8000",
        duration="30s",
        image_size=512,
    )
    out = tmp_path / "report"
    report = write_report(segment_runs, context, out)

    text = report.read_text()
    assert report == out / REPORT_FILE
    for fact in (
        "2026-11-22",
        "Test CPU, 2 CPUs",
        "onnxruntime (CPUExecutionProvider)",
        "eanet-ea-tiny (512x512)",
        "eanet-sa-tiny (512x512)",
        "images sent at 512x512",
        "![segment](segment.png)",
        "| segment | 8 | 2.50x | 2.50x |",
    ):
        assert fact in text
    with Image.open(out / "segment.png") as plot:
        assert plot.format == "PNG" and plot.width > 600
    assert load_runs(out / RUNS_FILE) == segment_runs


def test_report_survives_runs_where_nothing_completed(tmp_path):
    csv = tmp_path / "empty_stats.csv"
    csv.write_text(STATS_HEADER + "\n,Aggregated,0,0,0,0,0,0,0,0,0," + ",".join(["N/A"] * 11) + "\n")
    runs = [read_run_stats(csv, "segment", kind, 64, f"eanet-{kind}-tiny") for kind in ("ea", "sa")]
    context = ReportContext("2026-11-22", "cpu", "onnxruntime-cpu", {}, "http://127.0.0.1:1", "1s", None)

    report = write_report(runs, context, tmp_path / "out").read_text()

    assert "| segment | 64 | n/a | n/a |" in report
    assert (tmp_path / "out" / "segment.png").exists()


@pytest.mark.parametrize("task", list(ENDPOINTS))
def test_prepared_requests_carry_one_real_sample_each(task):
    samples = load_samples()
    requests = prepared_requests(task, samples, model_selector("sa"), image_size=96)

    assert requests and all(r.url.startswith(ENDPOINTS[task].path + "?") for r in requests)
    assert all("attention=sa" in r.url for r in requests)
    first = requests[0]
    if first.content_type == "image/png":
        with Image.open(io.BytesIO(first.body)) as image:
            assert image.size == (96, 96)
    elif task.startswith("pointcloud"):
        assert len(requests) == len(samples.clouds)
        assert np.asarray(json.loads(first.body)["points"]).shape == samples.clouds[0].points.shape
    else:
        assert json.loads(first.body)["label"] == samples.images[0].label


def test_model_selector_prefers_a_model_name():
    assert model_selector("ea", "eanet-sa-tiny") == {"model": "eanet-sa-tiny"}
    assert model_selector("sa") == {"attention": "sa"}


def test_locustfile_has_one_user_class_per_endpoint_tagged_with_its_task():
    # In a subprocess: importing locust monkey-patches the standard library (gevent).
    script = (
        "import json, sys; sys.path.insert(0, 'loadtest'); import locustfile as lf\n"
        "users = {name: cls for name, cls in vars(lf).items() if isinstance(cls, type)"
        " and issubclass(cls, lf.EndpointUser) and not cls.abstract}\n"
        "print(json.dumps({name: [cls.task_name, sorted({t for f in cls.tasks for t in f.locust_tag_set})]"
        " for name, cls in users.items()}))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    users = json.loads(result.stdout.strip().splitlines()[-1])
    assert users == {user_class(e): [e.endpoint, [e.endpoint]] for e in ENDPOINTS.values()}


# --- against the service, on a loopback port -------------------------------------------------

BUNDLED_WEIGHTS = REPO / "weights"
HAS_BUNDLED_MODELS = bool(discover_manifests(BUNDLED_WEIGHTS))


@pytest.fixture(scope="module")
def weights_dirs(tmp_path_factory) -> list[Path]:
    """The bundled models if weights/ has any, else the service tests' tiny ONNX models."""
    if HAS_BUNDLED_MODELS:
        return [BUNDLED_WEIGHTS]
    sys.path.insert(0, str(REPO / "tests" / "service"))
    from onnx_fixtures import write_all_models

    directory = tmp_path_factory.mktemp("weights")
    write_all_models(directory)
    return [directory]


@pytest.fixture(scope="module")
def service_url(weights_dirs, tmp_path_factory):
    """`easerve serve` with those models, as `easerve loadtest` starts it."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    with local_server(log, ready_timeout_s=300, weights_dirs=weights_dirs) as server:
        yield server.url


def test_every_locust_user_runs_headless_without_failures(service_url, tmp_path):
    users = [user_class(endpoint) for endpoint in ENDPOINTS.values()]
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--host",
        service_url,
        "--users",
        str(len(users)),
        "--spawn-rate",
        str(len(users)),
        "--run-time",
        "4s",
        "--csv",
        str(tmp_path / "smoke"),
        *users,
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]

    with (tmp_path / "smoke_stats.csv").open() as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    for endpoint in ENDPOINTS.values():
        assert int(rows[endpoint.path]["Request Count"]) > 0, endpoint.path
        assert int(rows[endpoint.path]["Failure Count"]) == 0, endpoint.path


@pytest.mark.skipif(not HAS_BUNDLED_MODELS, reason="no trained models in weights/ (the fixtures answer nonsense)")
def test_the_bundled_models_answer_the_samples_right(service_url, capsys):
    from easerve.loadtest.check import main as check

    assert check(["--host", service_url]) == 0, capsys.readouterr().out


def test_loadtest_command_serves_segmentation_at_the_image_size_and_compares_ea_with_sa(
    weights_dirs, tmp_path, monkeypatch
):
    from easerve.cli import main as easerve

    monkeypatch.setenv("EASERVE_WEIGHTS_DIRS", os.pathsep.join(map(str, weights_dirs)))
    out = tmp_path / "loadtest"
    code = easerve(
        [
            "loadtest",
            "--tasks",
            "segment",
            "--users",
            "1,2",
            "--duration",
            "2s",
            "--image-size",
            "96",
            "--out",
            str(out),
        ]
    )

    assert code == 0
    runs = load_runs(out / RUNS_FILE)
    assert [(run.attention, run.users) for run in runs] == [("ea", 1), ("sa", 1), ("ea", 2), ("sa", 2)]
    assert all(run.requests > 0 and run.failures == 0 for run in runs)
    # The server started here is watched: its memory beside each run's time, EA and SA alike.
    assert all(0 < run.server_rss_start_mb <= run.server_rss_peak_mb for run in runs)
    report = (out / REPORT_FILE).read_text()
    assert f"| {runs[0].server_rss_start_mb:,.0f}, {runs[0].server_rss_peak_mb:,.0f} |" in report
    for run in runs:
        assert f"{run.model} (96x96)" in report
    assert "| segment | 2 |" in report
    assert (out / "segment.png").exists()


def test_segmentation_models_are_resized_and_fixed_size_classifiers_are_not(weights_dirs, tmp_path):
    names = write_resized_models(weights_dirs, 320, tmp_path)

    originals = {
        manifest.name: manifest
        for manifest in (load_manifest(model) for folder in weights_dirs for model in discover_manifests(folder))
    }
    tasks = {originals[name].task for name in names}
    assert "segmentation" in tasks and "classification" not in tasks
    for name in names:
        resized = load_manifest(tmp_path / name)
        assert resized.preprocessing.image_size == (320, 320)
        assert resized.model_copy(update={"preprocessing": originals[name].preprocessing}) == originals[name]
        assert (tmp_path / name / resized.onnx.path).resolve().is_file()
