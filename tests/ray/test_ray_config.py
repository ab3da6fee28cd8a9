"""The Ray application's configuration, without a cluster: which `--model-config` keys are Ray
options, `ray.json`, the deployments' options, settings across processes, errors across the wire;
and that the plain service neither needs nor imports Ray."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import textwrap

import pytest
from ray_helpers import BUNDLED_WEIGHTS

pytest.importorskip("ray.serve", reason="needs Ray Serve: pip install 'easerve[ray]'")

from easerve.service.errors import DeadlineExceeded, QueueFull, Unavailable  # noqa: E402
from easerve.service.model_config import ModelConfigError  # noqa: E402
from easerve.service.ray_serve.app import plan_app  # noqa: E402
from easerve.service.ray_serve.config import (  # noqa: E402
    RAY_FILE,
    builder_settings,
    cpus_needed,
    service_settings,
    settings_args,
    settings_from_args,
    split_overrides,
)
from easerve.service.ray_serve.deployments import error_from_wire, error_to_wire  # noqa: E402
from easerve.service.ray_serve.launch import deploy_progress  # noqa: E402
from easerve.service.settings import Settings  # noqa: E402
from easerve.service.settings_cli import add_settings_arguments, settings_overrides  # noqa: E402

pytestmark = pytest.mark.ray
MODEL = "eamlp-ea-tiny"


@pytest.fixture()
def weights(tmp_path):
    """A weights folder with one bundled model (its ray.json is the test's to write)."""
    shutil.copytree(BUNDLED_WEIGHTS / MODEL, tmp_path / MODEL)
    return tmp_path


def test_ray_options_are_taken_out_of_the_model_config_entries():
    entries = [f"{MODEL}:max_batch_size=8", f"{MODEL}:num_replicas=3", "other:num_gpus=0.5", f"{MODEL}:instances=2"]
    service, ray = split_overrides(entries)
    assert service == [f"{MODEL}:max_batch_size=8", f"{MODEL}:instances=2"]
    assert ray == {MODEL: {"num_replicas": 3}, "other": {"num_gpus": 0.5}}
    settings = Settings(model_overrides=entries)
    assert service_settings(settings).model_overrides == service
    assert service_settings(settings).replicas == settings.replicas


def test_a_model_deployment_takes_its_serving_config_and_ray_options(weights):
    (weights / MODEL / "serving.json").write_text(json.dumps({"max_batch_size": 8, "max_queue_size": 20}))
    (weights / MODEL / RAY_FILE).write_text(json.dumps({"num_cpus": 2, "num_gpus": 0.25}))
    settings = Settings(
        weights_dirs=[weights],
        replicas=3,
        model_overrides=[f"{MODEL}:instances=2"],
        ingress_replicas=2,
        ingress_num_cpus=0.5,
    )
    plan = plan_app(settings)
    options = plan.models[MODEL]
    assert options["name"] == MODEL and options["num_replicas"] == 3
    assert options["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 0.25}
    # The replica holds its whole queue plus a batch per instance; callers queue at most as much.
    assert options["max_ongoing_requests"] == 20 + 2 * 8
    assert options["max_queued_requests"] == 20
    assert options["logging_config"] == {"log_level": "INFO", "enable_access_log": False}
    assert plan.ingress["num_replicas"] == 2 and plan.ingress["ray_actor_options"] == {"num_cpus": 0.5}
    assert cpus_needed(plan.deployments) == 2 * 0.5 + 3 * 2


def test_autoscaling_bounds_and_resources_from_the_command_line_win_over_ray_json(weights):
    (weights / MODEL / RAY_FILE).write_text(json.dumps({"num_replicas": 2, "num_cpus": 1}))
    overrides = [
        f"{MODEL}:num_replicas=null",
        f"{MODEL}:min_replicas=1",
        f"{MODEL}:max_replicas=4",
        f'{MODEL}:resources={{"accelerator": 1}}',
        f'{MODEL}:autoscaling_config={{"upscale_delay_s": 5}}',
    ]
    options = plan_app(Settings(weights_dirs=[weights], model_overrides=overrides)).models[MODEL]
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {
        "upscale_delay_s": 5,
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 32.0,
    }
    assert options["ray_actor_options"] == {"num_cpus": 1, "resources": {"accelerator": 1}}


@pytest.mark.parametrize(
    ("entries", "ray_json", "message"),
    [
        ([f"{MODEL}:num_replicas=2", f"{MODEL}:max_replicas=3"], None, "not both"),
        ([f"{MODEL}:min_replicas=5", f"{MODEL}:max_replicas=3"], None, "over max_replicas"),
        ([f"{MODEL}:num_gpus=-1"], None, "'num_gpus'"),
        ([], "[1, 2]", "JSON object"),
        (["nosuchmodel:num_replicas=2"], None, "not served"),
    ],
)
def test_invalid_ray_options_name_the_model_and_the_key(weights, entries, ray_json, message):
    if ray_json is not None:
        (weights / MODEL / RAY_FILE).write_text(ray_json)
    with pytest.raises(ModelConfigError, match=message):
        plan_app(Settings(weights_dirs=[weights], model_overrides=entries))


def test_model_control_other_than_none_is_refused(weights):
    with pytest.raises(ModelConfigError, match="not available on Ray"):
        plan_app(Settings(weights_dirs=[weights], model_control="explicit"))


def test_settings_travel_to_the_replicas_whole(weights, monkeypatch):
    monkeypatch.chdir(weights)
    settings = Settings(weights_dirs=["."], api_key="secret", max_queue_size=7, models=[MODEL])
    args = json.loads(json.dumps(settings_args(settings)))  # as JSON, like a serve config
    again = settings_from_args(args)
    assert again.api_key.get_secret_value() == "secret"
    assert again.weights_dirs == [weights.resolve()]
    assert again.model_dump(exclude={"api_key", "weights_dirs"}) == settings.model_dump(
        exclude={"api_key", "weights_dirs"}
    )


def test_builder_arguments_are_settings_the_ray_ones_among_them():
    settings = builder_settings({"models": "a,b", "max_queue_size": "9", "ingress_replicas": 3, "model_num_cpus": 0})
    assert settings.models == ["a", "b"] and settings.max_queue_size == 9
    assert settings.ingress_replicas == 3 and settings.model_num_cpus == 0
    with pytest.raises(ValueError, match="no_such_setting"):
        builder_settings({"no_such_setting": 1})


def test_a_relative_weights_folder_is_found_from_the_source_tree_wherever_ray_started(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # as `serve deploy` builds it: in the folder `ray start` ran in
    settings = builder_settings({"weights_dirs": "weights", "models": MODEL})
    assert settings.weights_dirs == [BUNDLED_WEIGHTS.resolve()]
    assert set(plan_app(settings).models) == {MODEL}
    (tmp_path / "weights").mkdir()  # one there wins
    assert builder_settings({"weights_dirs": "weights"}).weights_dirs == [tmp_path / "weights"]


def test_the_ray_reservations_are_flags_of_easerve_serve(weights):
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    flags = ["--weights-dir", str(weights), "--ingress-cpus", "0.25", "--model-cpus", "0", "--deploy-timeout", "30"]
    settings = Settings(**settings_overrides(parser.parse_args(flags)))
    plan = plan_app(settings)
    assert plan.ingress["ray_actor_options"] == {"num_cpus": 0.25}
    assert plan.models[MODEL]["ray_actor_options"] == {"num_cpus": 0}
    assert settings.deploy_timeout_s == 30


def test_health_checks_and_spreading_over_nodes_are_ray_options_of_a_model(weights):
    entries = [f"{MODEL}:health_check_period_s=2", f"{MODEL}:health_check_timeout_s=3"]
    entries.append(f"{MODEL}:max_replicas_per_node=1")
    options = plan_app(Settings(weights_dirs=[weights], model_overrides=entries)).models[MODEL]
    assert options["health_check_period_s"] == 2 and options["health_check_timeout_s"] == 3
    assert options["max_replicas_per_node"] == 1
    assert "max_replicas_per_node" not in plan_app(Settings(weights_dirs=[weights])).models[MODEL]


def test_deploy_progress_counts_running_replicas_per_deployment():
    class Deployment:
        def __init__(self, **states):
            self.replica_states = states
            self.message = ""

    progress = deploy_progress({"easerve": Deployment(RUNNING=1), MODEL: Deployment(RUNNING=1, STARTING=2)})
    assert progress == f"2/4 replicas running (easerve 1/1, {MODEL} 1/3)"


def test_the_service_errors_cross_the_wire_with_their_status_and_headers():
    full = error_from_wire(json.loads(json.dumps(error_to_wire(QueueFull("the queue is full", 2.5)))))
    assert isinstance(full, QueueFull) and full.status_code == 429 and full.headers() == {"Retry-After": "3"}
    late = error_from_wire(error_to_wire(DeadlineExceeded("too late")))
    assert isinstance(late, DeadlineExceeded) and late.message == "too late"
    gone = error_from_wire(error_to_wire(Unavailable("draining")))
    assert gone.status_code == 503 and gone.headers() == {"Retry-After": "1"}


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_plain_service_never_imports_ray():
    result = _run_python(
        """
        import sys
        from easerve.cli import build_parser
        from easerve.service.app import create_app
        from easerve.service.cli import run
        build_parser().parse_args(["serve", "--engine", "ray", "--address", "auto", "--replicas", "2"])
        prefixes = ("ray.", "easerve.service.ray_serve")
        print(sorted(name for name in sys.modules if name == "ray" or name.startswith(prefixes)))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_engine_ray_without_ray_installed_says_how_to_get_it():
    result = _run_python(
        f"""
        import sys

        class NoRay:
            def find_spec(self, name, path=None, target=None):
                if name == "ray" or name.startswith("ray."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, NoRay())
        from easerve.cli import main
        sys.exit(main(["serve", "--engine", "ray", "--weights-dir", {str(BUNDLED_WEIGHTS)!r}]))
        """
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'easerve[ray]'" in result.stdout


def _serve_configs() -> dict[str, dict]:
    """The repository's Ray Serve configs: the example and the RayService's serveConfigV2."""
    import yaml

    deploy = BUNDLED_WEIGHTS.parent / "deploy"
    rayservice = yaml.safe_load((deploy / "kubernetes" / "rayservice.yaml").read_text())
    return {
        "serve-config.yaml": yaml.safe_load((deploy / "ray" / "serve-config.yaml").read_text()),
        "rayservice.yaml": yaml.safe_load(rayservice["spec"]["serveConfigV2"]),
    }


@pytest.mark.parametrize("name", ["serve-config.yaml", "rayservice.yaml"])
def test_the_serve_configs_follow_ray_serves_schema_and_easerves_arguments(name, monkeypatch):
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(_serve_configs()[name])
    (application,) = config.applications
    assert application.import_path == "easerve.service.ray_serve.app:build_app"
    settings = builder_settings(application.args)
    if name == "serve-config.yaml":  # its models are the repository's: the whole plan holds
        monkeypatch.chdir(BUNDLED_WEIGHTS.parent)
        plan = plan_app(settings)
        assert set(plan.models) == set(settings.models)
        overridden = {deployment.name for deployment in application.deployments}
        assert overridden <= set(plan.models) | {plan.ingress["name"]}


@pytest.mark.parametrize("light", [True, False])
def test_the_ingress_makes_only_light_answers_on_its_event_loop(light):
    """A light answer (a class ranking) is made where the outputs arrive; any other (masks,
    part labels, images) on a thread, so that it cannot hold up the ingress's other requests."""
    import asyncio
    import threading
    import time
    from types import SimpleNamespace

    import numpy as np
    from prometheus_client import CollectorRegistry

    from easerve.service.batcher import BatchOutcome, Finish
    from easerve.service.metrics import ServiceMetrics
    from easerve.service.ray_serve.deployments import IngressMetrics, RemoteBatcher

    class Computed(RemoteBatcher):
        async def _submit(self, inputs, deadline):
            return BatchOutcome({"y": inputs["x"] * 2}, 0.0, 0.001, 1)

    handle = SimpleNamespace(options=lambda **_: None)
    batcher = Computed("m", handle, ServiceMetrics(), IngressMetrics.register(CollectorRegistry()))

    async def answered_on_the_loop() -> bool:
        finish = Finish(lambda outcome: threading.get_ident(), light=light)
        outcome = await batcher.submit({"x": np.ones((1, 2), np.float32)}, time.perf_counter() + 5, finish)
        return outcome.answer == threading.get_ident()

    assert asyncio.run(answered_on_the_loop()) is light
