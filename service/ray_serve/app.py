"""The Ray Serve application of easerve: an ingress deployment and one deployment per model.

    serve run easerve.service.ray_serve.app:app                  # settings from EASERVE_* only
    serve run easerve.service.ray_serve.app:build_app weights_dirs=/srv/weights models=eamlp-ea-tiny
    serve deploy deploy/ray/serve-config.yaml                    # import_path: ...app:build_app
    easerve serve --engine ray [--address auto] [--replicas N]   # starts or joins a cluster

`build_app(args)` is a Serve application builder: `args` holds any service setting (the names of
`service.settings.Settings`, e.g. `weights_dirs`, `models`, `model_overrides`, `max_queue_size`;
`EASERVE_*` still apply), the Ray ones among them (`ingress_replicas`, `ingress_num_cpus`,
`model_num_cpus`, `model_num_gpus`). `app` is `build_app({})`, built when
first read, so importing this module needs neither models nor a cluster.

The deployments are named `easerve` (the ingress) and after each model (`eamlp-ea-tiny`, ...), so
a `serve deploy` config can also override their options under `deployments:` the Ray way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray.serve import Application

from easerve.service.model_config import ModelConfigError, parse_overrides, served_model_files, serving_config
from easerve.service.settings import Settings

from .config import (
    builder_settings,
    ingress_deployment_options,
    model_deployment_options,
    ray_options,
    settings_args,
    split_overrides,
)
from .deployments import IngressDeployment, ModelDeployment


@dataclass(frozen=True)
class AppPlan:
    """The deployments' options: the ingress, and each model's by name."""

    settings: Settings
    ingress: dict[str, Any]
    models: dict[str, dict[str, Any]]

    @property
    def deployments(self) -> list[dict[str, Any]]:
        return [self.ingress, *self.models.values()]


def plan_app(settings: Settings) -> AppPlan:
    """The application's deployments for `settings`. ModelFilesError when no model (or a named
    one) is found, ModelConfigError for an invalid per-model setting or Ray option."""
    if settings.model_control != "none":
        raise ModelConfigError(
            f"model control mode {settings.model_control!r} is not available on Ray: the model deployments are "
            "fixed when the application is deployed (update it with `serve deploy` for new models)"
        )
    service_entries, ray_overrides = split_overrides(settings.model_overrides)
    overrides = parse_overrides(service_entries)
    found = served_model_files(settings, set(overrides) | set(ray_overrides))
    models = {}
    for files in found:
        name = files.name
        serving = serving_config(
            name, files.directory, files.manifest.max_batch_size, settings, overrides.get(name, {})
        )
        options = ray_options(name, files.directory, ray_overrides.get(name, {}))
        models[name] = model_deployment_options(name, serving, options, settings)
    return AppPlan(settings, ingress_deployment_options(settings), models)


def bind_plan(plan: AppPlan) -> Application:
    """The Serve application of `plan`: every deployment gets the same settings."""
    args = settings_args(plan.settings)
    models = {name: ModelDeployment.options(**options).bind(args, name) for name, options in plan.models.items()}
    return IngressDeployment.options(**plan.ingress).bind(args, models)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application builder of `serve run` / `serve deploy` (see the module docstring)."""
    return bind_plan(plan_app(builder_settings(args)))


def __getattr__(name: str) -> Any:
    # `app` is built on first access, from the environment's settings.
    if name == "app":
        return build_app({})
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
