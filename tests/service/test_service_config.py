"""Settings (environment, CLI flags), backend choice, API keys, and models that fail to load."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
from onnx_fixtures import model_name
from pydantic import ValidationError
from service_helpers import TestClient, image_bytes, make_settings, wait_until

from easerve.service import cli
from easerve.service.app import create_app
from easerve.service.model_files import ModelFilesError
from easerve.service.runners.ort import runner_session_options
from easerve.service.runners.selection import choose_backend
from easerve.service.settings import Settings

CLASSIFIER = model_name("fixcls")
PNG = {"content-type": "image/png"}


# -- settings ---------------------------------------------------------------------------------


def test_environment_variables_set_the_settings(monkeypatch):
    monkeypatch.setenv("EASERVE_PORT", "9100")
    monkeypatch.setenv("EASERVE_WEIGHTS_DIRS", "/a/weights:/b/more")
    monkeypatch.setenv("EASERVE_MODELS", "one, two three")
    monkeypatch.setenv("EASERVE_MAX_QUEUE_DELAY_MS", "2.5")
    monkeypatch.setenv("EASERVE_API_KEY", "s3cret")
    settings = Settings()
    assert settings.port == 9100
    assert [str(path) for path in settings.weights_dirs] == ["/a/weights", "/b/more"]
    assert settings.models == ["one", "two", "three"]
    assert settings.max_queue_delay_ms == 2.5
    assert settings.api_key.get_secret_value() == "s3cret" and "s3cret" not in repr(settings)


def test_cli_flags_override_the_environment(monkeypatch):
    monkeypatch.setenv("EASERVE_PORT", "9100")
    monkeypatch.setenv("EASERVE_MAX_BATCH_SIZE", "4")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--port", "9200", "--max-images", "3", "--timeout", "2"])
    overrides = {key: value for key, value in vars(args).items() if key in Settings.model_fields and value is not None}
    settings = Settings(**overrides)
    assert (settings.port, settings.max_batch_size) == (9200, 4)
    assert (settings.max_images_per_request, settings.default_timeout_s) == (3, 2.0)


def test_invalid_settings_are_refused(monkeypatch):
    monkeypatch.setenv("EASERVE_BACKEND", "cuda-magic")
    with pytest.raises(ValidationError, match="backend"):
        Settings()


def test_max_batch_size_caps_the_manifests(tmp_path):
    from easerve.service.model_config import serving_config

    assert serving_config("m", tmp_path, 8, Settings(max_batch_size=4), {}).max_batch_size == 4
    assert serving_config("m", tmp_path, 8, Settings(max_batch_size=16), {}).max_batch_size == 8
    assert serving_config("m", tmp_path, 8, Settings(), {}).max_batch_size == 8


def test_serve_exits_2_for_missing_models_and_invalid_settings(weights_dir):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args(["--weights-dir", str(weights_dir), "--models", "no-such-model"])) == 2
    assert cli.run(parser.parse_args(["--weights-dir", str(weights_dir), "--port", "70000"])) == 2


# -- backend choice ---------------------------------------------------------------------------


def test_auto_backend_on_a_cpu_machine_is_onnxruntime_and_says_why():
    choice = choose_backend("auto")
    assert choice.backend == "onnxruntime"
    assert "CPU" in choice.reason


def test_an_explicit_backend_is_taken_as_asked():
    assert choose_backend("torch").backend == "torch"


# -- API key ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_client(weights_dir):
    app = create_app(make_settings(weights_dir, models=[CLASSIFIER], api_key="k-123"))
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, what="readiness")
        yield client


def test_inference_without_the_key_is_401(keyed_client):
    response = keyed_client.post("/v1/classify", content=image_bytes((255, 0, 0)), headers=PNG)
    assert response.status_code == 401 and "API key" in response.json()["error"]


def test_inference_with_a_wrong_key_is_401(keyed_client):
    response = keyed_client.post("/v1/classify", content=image_bytes((255, 0, 0)), headers={**PNG, "x-api-key": "nope"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    "header", [{"authorization": "Bearer k-123"}, {"x-api-key": "k-123"}], ids=["bearer", "x-api-key"]
)
def test_inference_with_the_key_works(keyed_client, header):
    response = keyed_client.post("/v1/classify", content=image_bytes((255, 0, 0)), headers={**PNG, **header})
    assert response.status_code == 200


def test_v2_inference_needs_the_key_but_metadata_does_not(keyed_client):
    body = {"inputs": [{"name": "image", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": [0.0] * 768}]}
    assert keyed_client.post(f"/v2/models/{CLASSIFIER}/infer", json=body).status_code == 401
    assert (
        keyed_client.post(f"/v2/models/{CLASSIFIER}/infer", json=body, headers={"x-api-key": "k-123"}).status_code
        == 200
    )
    assert keyed_client.get(f"/v2/models/{CLASSIFIER}").status_code == 200


def test_health_models_and_metrics_need_no_key(keyed_client):
    for path in ("/healthz", "/readyz", "/v1/models", "/metrics", "/v2/health/ready"):
        assert keyed_client.get(path).status_code == 200, path


# -- loading ----------------------------------------------------------------------------------


def test_no_models_found_is_an_error(tmp_path):
    with pytest.raises(ModelFilesError, match="no model"):
        create_app(make_settings(tmp_path))


def test_a_model_whose_file_does_not_match_its_manifest_never_becomes_ready(weights_dir, tmp_path):
    shutil.copytree(weights_dir / CLASSIFIER, tmp_path / CLASSIFIER)
    with (tmp_path / CLASSIFIER / "model.onnx").open("ab") as handle:
        handle.write(b"tampered")
    failures: list[str] = []
    app = create_app(make_settings(tmp_path), on_load_failure=failures.append)
    with TestClient(app) as client:
        wait_until(lambda: bool(failures), what="the load failure")
        ready = client.get("/readyz")
        model = client.get("/v1/models").json()["models"][0]
        inference = client.post("/v1/classify", content=image_bytes((255, 0, 0)), headers=PNG)
    assert ready.status_code == 503 and "sha256" in ready.json()["error"]
    assert model["state"] == "failed" and "sha256" in model["error"]
    assert inference.status_code == 503
    assert "sha256" in failures[0]


def test_a_runner_that_fails_to_warm_up_fails_the_service(weights_dir):
    class BrokenRunner:
        backend = "broken"

        def run(self, inputs):
            raise RuntimeError("cannot compute")

        def close(self):
            pass

    failures: list[str] = []
    app = create_app(
        make_settings(weights_dir, models=[CLASSIFIER]), lambda files, batch: BrokenRunner(), failures.append
    )
    with TestClient(app) as client:
        wait_until(lambda: bool(failures), what="the load failure")
        assert client.get("/readyz").json()["phase"] == "failed"
    assert "cannot compute" in failures[0]


def test_each_model_instance_gets_its_own_warmed_up_runner_and_all_are_closed(weights_dir):
    from easerve.service.runners.ort import OrtRunner

    built: list[OrtRunner] = []
    closed: list[OrtRunner] = []
    settings = make_settings(weights_dir, models=[CLASSIFIER], instances=3)

    class CountingRunner(OrtRunner):
        def close(self):
            closed.append(self)
            super().close()

    def factory(files, batch):
        built.append(CountingRunner(files, settings, batch))
        return built[-1]

    with TestClient(create_app(settings, factory)) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, what="ready")
        info = next(m for m in client.get("/v1/models").json()["models"] if m["name"] == CLASSIFIER)
        assert info["batching"]["instances"] == 3
        answer = client.post("/v1/classify", content=image_bytes((255, 0, 0)), headers=PNG)
        assert answer.status_code == 200
    assert len(built) == 3 and len(set(map(id, built))) == 3
    assert sorted(map(id, closed)) == sorted(map(id, built))


def test_instances_come_from_the_environment_and_the_cli(monkeypatch):
    monkeypatch.setenv("EASERVE_INSTANCES", "2")
    assert Settings().instances == 2
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert parser.parse_args(["--instances", "4"]).instances == 4
    with pytest.raises(ValidationError):
        Settings(instances=0)


@pytest.mark.parametrize(
    "environment,flags,spinning", [(None, [], "0"), ("true", [], "1"), (None, ["--intra-op-spinning"], "1")]
)
def test_onnxruntime_threads_spin_only_when_asked(monkeypatch, environment, flags, spinning):
    if environment is not None:
        monkeypatch.setenv("EASERVE_INTRA_OP_SPINNING", environment)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    overrides = {
        key: value
        for key, value in vars(parser.parse_args(flags)).items()
        if key in Settings.model_fields and value is not None
    }
    options = runner_session_options(Settings(**overrides))
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == spinning


# -- one source for every setting -------------------------------------------------------------


def test_every_setting_has_a_flag_and_a_row_in_the_readme_table():
    from easerve.service.settings_cli import TABLE_END, TABLE_START, settings_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert section == settings_table(), "regenerate it: python -m easerve.service.settings_cli README.md"
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    flagged = {action.dest for action in parser._actions} & set(Settings.model_fields)
    assert flagged == set(Settings.model_fields) - {"api_key"}
    for name in Settings.model_fields:
        assert f"`EASERVE_{name.upper()}`" in section


def test_generated_flags_keep_types_choices_and_booleans_both_ways(monkeypatch):
    from easerve.service.settings_cli import settings_overrides

    monkeypatch.setenv("EASERVE_ACCESS_LOG", "true")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        ["--weights-dir", "a", "--weights-dir", "b", "--models", "x", "y", "--no-access-log", "--max-batch-size", "3"]
    )
    settings = Settings(**settings_overrides(args))
    assert settings.weights_dirs == [Path("a"), Path("b")] and settings.models == ["x", "y"]
    assert settings.access_log is False and settings.max_batch_size == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["--backend", "cuda-magic"])
