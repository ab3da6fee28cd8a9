"""`easerve bench serve` on the fixture models: its naive baseline answers like the service, and
a short run of the whole benchmark writes its report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from onnx_fixtures import model_name
from service_helpers import TestClient, image_bytes, make_settings

from easerve.bench.serve_naive import create_naive_app
from easerve.service.model_files import discover_models
from easerve.service.runners.ort import OrtRunner

REPO = Path(__file__).resolve().parents[2]
CLASSIFIER = model_name("fixcls")
SEGMENTER = model_name("fixseg")


def test_the_naive_server_answers_as_the_service_does(client, weights_dir):
    settings = make_settings(weights_dir)
    runners = {
        files.name: (OrtRunner(files, settings, 1), files.manifest)
        for files in discover_models([weights_dir], [CLASSIFIER, SEGMENTER])
    }
    png = image_bytes((255, 0, 0))
    with TestClient(create_naive_app(runners)) as naive:
        for route, model in (("/v1/classify", CLASSIFIER), ("/v1/segment", SEGMENTER)):
            ours = client.post(route, params={"model": model}, content=png, headers={"content-type": "image/png"})
            theirs = naive.post(route, params={"model": model}, content=png)
            assert theirs.status_code == 200
            assert theirs.json()["results"] == ours.json()["results"]


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
    rows = [line for line in report.splitlines() if line.startswith(("| 1 |", "| 4 |"))]
    assert len(rows) == 2 * 2 * 3  # models x concurrencies x servers
    assert all(row.split("|")[-2].strip() == "0" for row in rows), "some requests failed"
    assert "service / ceiling" in report and "### Targets" in report
