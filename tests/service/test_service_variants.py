"""Serving what export makes: variants chosen by precision (auto by measurement), per-model
serving configuration as data with its precedence, and one TensorRT engine cache for export and
the service."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from service_helpers import TestClient, make_settings, wait_until

from easerve.artifacts import tensorrt as core_tensorrt
from easerve.artifacts.manifest import load_manifest
from easerve.loadtest.samples import load_samples
from easerve.service import cli
from easerve.service.app import create_app
from easerve.service.model_config import ModelConfigError, serving_config
from easerve.service.model_files import ModelFiles
from easerve.service.model_loading import allowed_variants, choose_variant
from easerve.service.repository import ServedModel
from easerve.service.settings import Settings
from easerve.service.settings_cli import settings_overrides

BUNDLED = Path(__file__).resolve().parents[2] / "weights"
INT8_CLASSIFIER = "eamlp-ea-tiny"


def bundled_copy(tmp_path: Path, name: str) -> Path:
    """A copy of a bundled model folder (serving files only), to edit its manifest or config."""
    folder = tmp_path / name
    folder.mkdir(parents=True)
    for item in (BUNDLED / name).iterdir():
        if item.suffix in (".onnx", ".json"):
            shutil.copy(item, folder / item.name)
    return folder


# -- variants -------------------------------------------------------------------------------------


def test_the_int8_variant_is_served_and_agrees_with_fp32_on_the_samples():
    samples = load_samples().images
    answers = {}
    for precision in ("fp32", "int8"):
        settings = make_settings(BUNDLED, models=[INT8_CLASSIFIER], precision=precision)
        with TestClient(create_app(settings)) as client:
            wait_until(lambda client=client: client.get("/readyz").status_code == 200, 60, "readiness")
            model = client.get("/v1/models").json()["models"][0]
            assert model["variant"] == precision and model["backend"] == f"onnxruntime-cpu/{precision}"
            assert client.get(f"/v2/models/{INT8_CLASSIFIER}").json()["backend"] == f"onnxruntime-cpu/{precision}"
            labels = []
            for sample in samples:
                answer = client.post("/v1/classify", content=sample.png, headers={"content-type": "image/png"})
                assert answer.json()["backend"] == f"onnxruntime-cpu/{precision}"
                labels.append(answer.json()["results"][0]["top_k"][0]["label"])
            answers[precision] = labels
    agreement = np.mean([a == b for a, b in zip(answers["fp32"], answers["int8"])])
    variant = load_manifest(BUNDLED / INT8_CLASSIFIER).variant("int8")
    assert agreement >= 1 - (variant.max_drop_points / 100) - 1 / len(samples)


def test_a_variant_outside_its_accuracy_gate_is_never_served(tmp_path):
    folder = bundled_copy(tmp_path, INT8_CLASSIFIER)
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(q for q in manifest["quantized"] if q["kind"] == "int8-static")
    entry["metric_quantized"] = entry["metric_fp32"] - 0.5  # 50 points below FP32
    (folder / "manifest.json").write_text(json.dumps(manifest))
    files = ModelFiles(folder, load_manifest(folder))
    assert allowed_variants(files, "auto")[0] == ["fp32"]
    names, reason = allowed_variants(files, "int8")
    assert names == ["fp32"] and "no int8 graph within its gate" in reason


class FakeRunner:
    def __init__(self, files: ModelFiles) -> None:
        self.files = files
        self.closed = False

    backend = "fake"

    def run(self, inputs):
        return {}

    def close(self) -> None:
        self.closed = True


def test_auto_serves_the_variant_measured_fastest_here_and_closes_the_others():
    files = ModelFiles(BUNDLED / INT8_CLASSIFIER, load_manifest(BUNDLED / INT8_CLASSIFIER))
    built: list[FakeRunner] = []

    def factory(variant_files: ModelFiles, max_batch: int) -> FakeRunner:
        built.append(FakeRunner(variant_files))
        return built[-1]

    for timings, expected in (({"fp32": 0.004, "int8": 0.002}, "int8"), ({"fp32": 0.002, "int8": 0.005}, "fp32")):
        built.clear()
        model = ServedModel(files, serving_config(files.name, files.directory, 32, Settings(precision="auto"), {}))
        runner = choose_variant(model, factory, 32, timer=lambda runner, f, batch, t=timings: t[f.variant_name])
        assert model.files.variant_name == expected and runner.files.variant_name == expected
        assert f"auto: {expected} was fastest" in model.variant_reason
        assert [r.closed for r in built] == [r is not runner for r in built]


def test_auto_measures_the_real_variants_here():
    settings = make_settings(BUNDLED, models=[INT8_CLASSIFIER], precision="auto")
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, 60, "readiness")
        model = client.get("/v1/models").json()["models"][0]
    assert model["variant"] in ("fp32", "int8")
    assert (
        model["variant_reason"].startswith(f"auto: {model['variant']} was fastest") and "ms" in model["variant_reason"]
    )


# -- per-model serving configuration --------------------------------------------------------------


def test_per_model_config_precedence_is_file_then_environment_then_flag(tmp_path, monkeypatch):
    folder = bundled_copy(tmp_path, INT8_CLASSIFIER)
    (folder / "serving.json").write_text(json.dumps({"max_batch_size": 8, "instances": 2, "default_timeout_s": 5}))
    monkeypatch.setenv("EASERVE_MODEL_OVERRIDES", f"{INT8_CLASSIFIER}:instances=3,{INT8_CLASSIFIER}:max_batch_size=4")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--weights-dir", str(tmp_path), "--model-config", f"{INT8_CLASSIFIER}:max_batch_size=2"])
    settings = Settings(**settings_overrides(args))
    app = create_app(settings, runner_factory=lambda files, batch: FakeRunner(files))
    serving = app.state.service.repository.get(INT8_CLASSIFIER).serving
    # file: timeout 5 (nothing overrides it); environment: instances 3; flag: max batch 2.
    assert (serving.default_timeout_s, serving.instances, serving.max_batch_size) == (5, 3, 2)


@pytest.mark.parametrize(
    "serving,override,message",
    [
        ({"max_batch_size": 0}, None, "'max_batch_size'"),
        ({"precision": "int4"}, None, "'precision'"),
        ({"colour": "blue"}, None, "'colour'"),
        ({}, "instances=-1", "'instances'"),
        ({"preferred_batch_sizes": [64]}, None, "'preferred_batch_sizes'"),
    ],
)
def test_an_invalid_per_model_value_exits_2_naming_the_model_and_the_key(tmp_path, caplog, serving, override, message):
    folder = bundled_copy(tmp_path, INT8_CLASSIFIER)
    (folder / "serving.json").write_text(json.dumps(serving))
    flags = ["--weights-dir", str(tmp_path)] + (["--model-config", f"{INT8_CLASSIFIER}:{override}"] if override else [])
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args(flags)) == 2
    assert INT8_CLASSIFIER in caplog.text and message in caplog.text


def test_per_model_batching_settings_reach_the_batcher_and_the_models_list(tmp_path):
    folder = bundled_copy(tmp_path, INT8_CLASSIFIER)
    serving = {"max_batch_size": 8, "preferred_batch_sizes": [4, 8], "max_queue_delay_ms": 3, "max_queue_size": 9}
    (folder / "serving.json").write_text(json.dumps(serving))
    with TestClient(create_app(make_settings(tmp_path))) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, 60, "readiness")
        batching = client.get("/v1/models").json()["models"][0]["batching"]
        config = client.get(f"/v2/models/{INT8_CLASSIFIER}/config").json()
    assert (batching["max_batch_size"], batching["preferred_batch_sizes"]) == (8, [4, 8])
    assert (batching["max_queue_delay_ms"], batching["max_queue_size"]) == (3, 9)
    assert config["dynamic_batching"] == {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 3000}


def test_a_model_config_for_a_model_not_served_is_refused(tmp_path):
    bundled_copy(tmp_path, INT8_CLASSIFIER)
    with pytest.raises(ModelConfigError, match="no-such-model"):
        create_app(make_settings(tmp_path, model_overrides=["no-such-model:instances=2"]))


# -- one TensorRT builder and cache ---------------------------------------------------------------


@pytest.fixture
def fake_tensorrt(monkeypatch):
    """A stand-in `tensorrt` module and GPU, with the network build replaced: exercises the one
    cache layout where TensorRT cannot run."""
    builds: list[Path] = []
    module = types.SimpleNamespace(__version__="10.9.0")
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(core_tensorrt, "gpu_compute_capability", lambda device=0: "9.0")

    def build(trt, onnx_path, profile, timing_cache):
        builds.append(onnx_path)
        return b"engine", b"timing"

    monkeypatch.setattr(core_tensorrt, "_build", build)
    return builds


def test_an_engine_built_by_export_is_the_one_the_service_finds(tmp_path, fake_tensorrt):
    from easerve.export import cli as export_cli
    from easerve.service.runners.tensorrt_native import engine_for

    folder = bundled_copy(tmp_path / "weights", "eanet-ea-tiny")
    manifest = load_manifest(folder)
    args = argparse.Namespace(trt_precision="fp32", engine_cache=tmp_path / "cache")
    assert export_cli._tensorrt(args, folder, manifest, log=lambda message: None) == 0
    settings = Settings(engine_cache_dir=tmp_path / "cache")
    found = engine_for(ModelFiles(folder, manifest), settings)
    assert len(fake_tensorrt) == 1, "the service rebuilt an engine export had built"
    assert found.parent == tmp_path / "cache" / "tensorrt" and found.read_bytes() == b"engine"


def test_the_services_engine_cache_default_is_exports(monkeypatch, tmp_path):
    monkeypatch.setenv("EASERVE_ENGINE_CACHE_DIR", str(tmp_path))
    assert Settings().engine_cache_dir == core_tensorrt.default_cache_root() == tmp_path


def test_the_builder_only_makes_strongly_typed_networks():
    calls = []
    builder = types.SimpleNamespace(create_network=lambda flags: calls.append(flags) or "network")
    for version, expected in (("10.9.0", 1 << 7), ("11.0.0", 0)):
        trt = types.SimpleNamespace(
            __version__=version, NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=7)
        )
        calls.clear()
        assert core_tensorrt._strongly_typed_network(trt, builder) == "network"
        assert calls == [expected]
