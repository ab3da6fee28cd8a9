"""A live model repository: the index, load / reload / unload with versions, under load, with a
broken new version, in the three model control modes, and through tritonclient's calls."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
from onnx_fixtures import model_name
from service_helpers import LiveServer, image_bytes, make_settings, wait_until

from easerve.service.app import create_app

CLASSIFIER = model_name("fixcls")
PNG = {"content-type": "image/png"}


@pytest.fixture
def repository(weights_dir, tmp_path) -> Path:
    """A weights folder holding a copy of the fixture classifier (flat layout: version 1)."""
    shutil.copytree(weights_dir / CLASSIFIER, tmp_path / CLASSIFIER)
    return tmp_path


def add_version(repository: Path, version: int, broken: bool = False) -> Path:
    """`<model>/<version>/`: the same graph again (a new export), or with a wrong hash."""
    folder = repository / CLASSIFIER / str(version)
    folder.mkdir()
    for name in ("manifest.json", "model.onnx"):
        shutil.copy(repository / CLASSIFIER / name, folder / name)
    if broken:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["onnx"]["sha256"] = "0" * 64
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def index(server: LiveServer) -> dict[str, dict]:
    return {entry["name"]: entry for entry in httpx.post(f"{server.url}/v2/repository/index").json()}


def version_served(server: LiveServer) -> list[str]:
    return httpx.get(f"{server.url}/v2/models/{CLASSIFIER}").json()["versions"]


def test_the_index_lists_every_model_with_its_version_and_state(weights_dir):
    with LiveServer(create_app(make_settings(weights_dir))) as server:
        entries = index(server)
        assert entries[CLASSIFIER] == {"name": CLASSIFIER, "version": "1", "state": "READY", "reason": ""}
        ready = httpx.post(f"{server.url}/v2/repository/index", json={"ready": True}).json()
        assert {entry["name"] for entry in ready} == set(entries)


def test_without_explicit_control_load_and_unload_are_refused(repository):
    with LiveServer(create_app(make_settings(repository))) as server:
        answer = httpx.post(f"{server.url}/v2/repository/models/{CLASSIFIER}/load")
        assert answer.status_code == 400 and "--model-control explicit" in answer.json()["error"]


def test_a_new_version_replaces_the_old_under_load_and_no_request_fails(repository):
    settings = make_settings(repository, model_control="explicit")
    with LiveServer(create_app(settings)) as server:
        assert version_served(server) == ["1"]
        add_version(repository, 2)

        async def scenario():
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                stop = time.perf_counter() + 4

                async def user() -> list[int]:
                    codes = []
                    while time.perf_counter() < stop and len(codes) < 200:
                        answer = await client.post("/v1/classify", content=image_bytes((255, 0, 0)), headers=PNG)
                        codes.append(answer.status_code)
                    return codes

                async def reload() -> int:
                    await asyncio.sleep(0.5)
                    return (await client.post(f"/v2/repository/models/{CLASSIFIER}/load")).status_code

                *users, reloaded = await asyncio.gather(*(user() for _ in range(16)), reload())
                return [code for codes in users for code in codes], reloaded

        codes, reloaded = asyncio.run(scenario())
        assert reloaded == 200
        assert codes and set(codes) == {200}, {code: codes.count(code) for code in set(codes)}
        assert version_served(server) == ["2"] and index(server)[CLASSIFIER]["version"] == "2"
        assert httpx.get(f"{server.url}/v2/models/{CLASSIFIER}/versions/1").status_code == 404


def test_a_broken_new_version_leaves_the_old_one_serving_and_says_why(repository):
    settings = make_settings(repository, model_control="explicit")
    with LiveServer(create_app(settings)) as server:
        add_version(repository, 2, broken=True)
        answer = httpx.post(f"{server.url}/v2/repository/models/{CLASSIFIER}/load")
        assert answer.status_code == 400 and "sha256" in answer.json()["error"]
        assert version_served(server) == ["1"]
        entry = index(server)[CLASSIFIER]
        assert entry["state"] == "READY" and "version 2 failed" in entry["reason"]
        assert httpx.post(f"{server.url}/v1/classify", content=image_bytes((0, 255, 0)), headers=PNG).status_code == 200


def test_unload_then_load_again(repository):
    settings = make_settings(repository, model_control="explicit")
    with LiveServer(create_app(settings)) as server:
        assert httpx.post(f"{server.url}/v2/repository/models/{CLASSIFIER}/unload").status_code == 200
        assert index(server)[CLASSIFIER]["state"] == "UNAVAILABLE"
        refused = httpx.post(f"{server.url}/v1/classify", content=image_bytes((0, 0, 255)), headers=PNG)
        assert refused.status_code == 503 and "unloaded" in refused.json()["error"]
        assert httpx.post(f"{server.url}/v2/repository/models/{CLASSIFIER}/load").status_code == 200
        assert httpx.post(f"{server.url}/v1/classify", content=image_bytes((0, 0, 255)), headers=PNG).status_code == 200


def test_loading_or_unloading_unknown_names_is_404_and_leaves_nothing_behind(repository):
    settings = make_settings(repository, model_control="explicit")
    with LiveServer(create_app(settings)) as server:
        for index_ in range(20):
            assert httpx.post(f"{server.url}/v2/repository/models/nope-{index_}/load").status_code == 404
            assert httpx.post(f"{server.url}/v2/repository/models/nope-{index_}/unload").status_code == 404
        control = server.app.state.service.control
        assert set(control._locks) <= {CLASSIFIER}


def test_poll_mode_picks_up_a_new_version_and_a_removed_model(repository):
    settings = make_settings(repository, model_control="poll", repository_poll_s=0.2)
    with LiveServer(create_app(settings)) as server:
        add_version(repository, 3)
        wait_until(lambda: version_served(server) == ["3"], 20, "version 3 picked up by polling")
        shutil.rmtree(repository / CLASSIFIER)
        wait_until(lambda: index(server)[CLASSIFIER]["state"] == "UNAVAILABLE", 20, "the removed model unloaded")


def test_tritonclient_repository_calls_work_unchanged(repository):
    http = pytest.importorskip("tritonclient.http")
    settings = make_settings(repository, model_control="explicit")
    with LiveServer(create_app(settings)) as server:
        client = http.InferenceServerClient(url=server.url.removeprefix("http://"))
        try:
            entries = client.get_model_repository_index()
            assert {"name": CLASSIFIER, "version": "1", "state": "READY", "reason": ""} in entries
            client.unload_model(CLASSIFIER)
            assert not client.is_model_ready(CLASSIFIER)
            add_version(repository, 2)
            client.load_model(CLASSIFIER)
            assert client.is_model_ready(CLASSIFIER) and client.is_model_ready(CLASSIFIER, "2")
        finally:
            client.close()
