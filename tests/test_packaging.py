"""The wheel: everything installs under the one `easerve` package, and `easerve serve` runs from
the installed files alone (no source tree on the path) with the bundled weights."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from easerve.loadtest.samples import load_samples
from easerve.loadtest.server import free_port, running_server

REPO = Path(__file__).resolve().parents[1]
BUILD_IGNORED = (".git", ".venv", "build", "*.egg-info", "__pycache__", "weights", "results", "docker", "tests")
LAYOUT_FOLDERS = ("model_defs", "training", "export", "artifacts", "service", "bench", "loadtest")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools would otherwise reuse (and package) a stale build/ folder.
    source = tmp_path_factory.mktemp("source") / "easerve"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*BUILD_IGNORED))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("easerve-*.whl")
    return path


def test_the_wheel_adds_only_the_easerve_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/", 1)[0] for name in names}
    assert top_level == {"easerve", wheel.name.split("-py3")[0] + ".dist-info"}, top_level


def test_the_wheel_holds_every_module_and_sample_of_the_source_tree(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"easerve/{path.relative_to(REPO).as_posix()}"
        for folder in LAYOUT_FOLDERS
        for path in (REPO / folder).rglob("*.py")
    }
    for data in (REPO / "loadtest" / "samples", REPO / "service" / "console"):
        expected |= {f"easerve/{path.relative_to(REPO).as_posix()}" for path in data.rglob("*") if path.is_file()}
    assert expected <= names, sorted(expected - names)


def test_easerve_serve_runs_from_the_installed_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {name: value for name, value in os.environ.items() if not name.startswith("EASERVE_")}
    env["PYTHONPATH"] = str(site)
    where = subprocess.run(
        [sys.executable, "-c", "import easerve.service.app as app; print(app.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout
    port = free_port()
    command = [sys.executable, "-m", "easerve.cli", "serve", "--weights-dir", str(REPO / "weights")]
    command += ["--models", "eamlp-ea-tiny", "--port", str(port), "--workers", "1"]
    url = f"http://127.0.0.1:{port}"
    with running_server(command, url, tmp_path / "serve.log", 120, env=env, cwd=tmp_path):
        image = load_samples().images[0]
        answer = httpx.post(f"{url}/v1/classify", files={"file": ("shape.png", image.png, "image/png")}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["top_k"][0]["label"] == image.label
