"""What the Ray Serve application is built from: the service's settings, the arguments of the
application builder, and each model deployment's Ray options.

A model deployment's Ray options (`RayModelOptions`: replicas or autoscaling bounds, CPUs, GPU
fractions, custom resources) come from, in rising priority: the `replicas` setting and the
`model_num_cpus` / `model_num_gpus` settings, the model folder's `ray.json`, then
`--model-config NAME:KEY=VALUE` entries (`EASERVE_MODEL_OVERRIDES`) whose KEY is one of these
options. Those entries are taken out before the service sees the rest, so `serving.json` and the
other `--model-config` keys keep their meaning (batching, instances, precision, timeout).

    weights/eamlp-ea-tiny/ray.json:  {"min_replicas": 1, "max_replicas": 4, "num_cpus": 1}
    easerve serve --engine ray --model-config eamlp-ea-tiny:num_replicas=2 --model-config eamlp-ea-tiny:num_gpus=0.25

Settings (the Ray ones among them: `ingress_replicas`, `ingress_num_cpus`, `model_num_cpus`,
`model_num_gpus`) travel to every replica as the builder's arguments (a JSON object of every field), so
each replica runs with exactly the settings the application was built with, wherever it lands;
the API key among them (the key is part of the application's config in the cluster).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from easerve.service.model_config import ModelConfigError, ServingConfig, parse_overrides, read_config_file, validated
from easerve.service.settings import Settings

RAY_FILE = "ray.json"
# The folder that holds easerve's source folders (service/, weights/ in a checkout).
SOURCE_ROOT = Path(__file__).resolve().parents[2]
# Names of the deployments: the ingress, and each model's own name.
INGRESS_NAME = "easerve"
APP_NAME = "easerve"


class RayModelOptions(BaseModel):
    """One model deployment's Ray options; a key left out takes the default below."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_replicas: int | None = Field(default=None, ge=1, description="fixed replica count (default: `replicas`)")
    min_replicas: int | None = Field(default=None, ge=0, description="autoscaling: fewest replicas")
    max_replicas: int | None = Field(default=None, ge=1, description="autoscaling: most replicas (turns it on)")
    target_ongoing_requests: float | None = Field(
        default=None, gt=0, description="autoscaling: requests queued or computing per replica (default: max batch)"
    )
    autoscaling_config: dict[str, Any] = Field(
        default={}, description="autoscaling: any other key of Ray's autoscaling_config (upscale_delay_s, ...)"
    )
    num_cpus: float | None = Field(default=None, ge=0, description="logical CPUs each replica reserves")
    num_gpus: float | None = Field(default=None, ge=0, description="GPUs (or a fraction of one) each replica reserves")
    resources: dict[str, float] = Field(default={}, description="custom Ray resources each replica reserves")
    max_ongoing_requests: int | None = Field(
        default=None, ge=1, description="requests one replica holds (default: its queue + what its instances compute)"
    )
    health_check_period_s: float | None = Field(
        default=None, gt=0, description="how often Ray checks each replica (Ray's default: 10 s)"
    )
    health_check_timeout_s: float | None = Field(
        default=None, gt=0, description="how long a replica's health check may take before it fails (Ray's: 30 s)"
    )
    max_queued_requests: int | None = Field(
        default=None, ge=1, description="requests each caller queues when every replica is full; more: 429"
    )
    max_replicas_per_node: int | None = Field(
        default=None, ge=1, description="replicas Ray may place on one node (1: one per node, a node lost costs one)"
    )

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None or self.min_replicas is not None or bool(self.autoscaling_config)


RAY_KEYS = frozenset(RayModelOptions.model_fields)


def builder_settings(args: dict[str, Any] | None) -> Settings:
    """The settings in a builder's `args` (the settings also read `EASERVE_*` as usual), weights
    folders made absolute (`weights_folder`). ValidationError for a bad value or unknown key."""
    settings = Settings(**dict(args or {}))
    return settings.model_copy(update={"weights_dirs": [weights_folder(path) for path in settings.weights_dirs]})


def weights_folder(path: Path) -> Path:
    """A weights folder as an absolute path: a relative one from the working folder, or when
    that has no such folder, from the source tree easerve runs from (`serve deploy` builds the
    application wherever `ray start` ran, not where the config is)."""
    if path.is_absolute() or path.exists() or not (SOURCE_ROOT / path).is_dir():
        return path.resolve()
    return SOURCE_ROOT / path


def settings_args(settings: Settings) -> dict[str, Any]:
    """Every setting as JSON values (the API key in clear), for the deployments' arguments.
    Weights folders are made absolute: a replica's working folder is not the builder's."""
    values = settings.model_dump(mode="json")
    values["weights_dirs"] = [str(Path(folder).resolve()) for folder in settings.weights_dirs]
    values["api_key"] = settings.api_key.get_secret_value() if settings.api_key is not None else None
    return values


def settings_from_args(values: dict[str, Any]) -> Settings:
    return Settings(**values)


def split_overrides(entries: list[str]) -> tuple[list[str], dict[str, dict[str, object]]]:
    """`--model-config` entries split into those the service reads (kept as they are, in order)
    and the Ray options by model name."""
    service: list[str] = []
    ray: dict[str, dict[str, object]] = {}
    for entry in entries:
        parsed = parse_overrides([entry])  # ModelConfigError for a malformed entry
        ((name, values),) = parsed.items()
        ((key, value),) = values.items()
        if key in RAY_KEYS:
            ray.setdefault(name, {})[key] = value
        else:
            service.append(entry)
    return service, ray


def service_settings(settings: Settings) -> Settings:
    """`settings` without the Ray option entries of `model_overrides` (what the service reads)."""
    service, _ = split_overrides(settings.model_overrides)
    return settings.model_copy(update={"model_overrides": service})


def ray_options(name: str, directory: Path, overrides: dict[str, object]) -> RayModelOptions:
    """Model `name`'s own Ray options: its `ray.json` under `overrides`; ModelConfigError names
    the model and the key of an invalid value."""
    values = read_config_file(directory / RAY_FILE, name) | overrides
    options = validated(RayModelOptions, values, name, what="Ray option ")
    if options.autoscaling and options.num_replicas is not None:
        raise ModelConfigError(f"model {name}: give either num_replicas or min/max_replicas (autoscaling), not both")
    low, high = options.min_replicas or 0, options.max_replicas
    if high is not None and low > high:
        raise ModelConfigError(f"model {name}: min_replicas {low} is over max_replicas {high}")
    return options


def replica_capacity(serving: ServingConfig) -> int:
    """Items one replica computes at once: a batch on each of its instances."""
    return serving.instances * serving.max_batch_size


def model_deployment_options(
    name: str, serving: ServingConfig, options: RayModelOptions, settings: Settings
) -> dict[str, Any]:
    """`Deployment.options(...)` of model `name`.

    Each replica holds easerve's own batcher, which must see the requests to batch them, so a
    replica takes up to its queue plus what its instances compute (`max_ongoing_requests`); its
    own full queue answers 429 first. Past that, each caller queues at most `max_queue_size`
    more (Ray's `max_queued_requests`, also 429)."""
    actor: dict[str, Any] = {"num_cpus": options.num_cpus if options.num_cpus is not None else settings.model_num_cpus}
    num_gpus = options.num_gpus if options.num_gpus is not None else settings.model_num_gpus
    if num_gpus:
        actor["num_gpus"] = num_gpus
    if options.resources:
        actor["resources"] = dict(options.resources)
    deployment: dict[str, Any] = {
        "name": name,
        "ray_actor_options": actor,
        "max_ongoing_requests": options.max_ongoing_requests or serving.max_queue_size + replica_capacity(serving),
        "max_queued_requests": options.max_queued_requests or serving.max_queue_size,
        # Ray waits this long for a stopping replica's requests: its queue drains first.
        "graceful_shutdown_timeout_s": settings.drain_timeout_s + 5.0,
        "logging_config": logging_config(settings),
    }
    for key in ("health_check_period_s", "health_check_timeout_s", "max_replicas_per_node"):
        if getattr(options, key) is not None:
            deployment[key] = getattr(options, key)
    if options.autoscaling:
        deployment["autoscaling_config"] = {
            **options.autoscaling_config,
            "min_replicas": options.min_replicas if options.min_replicas is not None else 1,
            "max_replicas": options.max_replicas
            if options.max_replicas is not None
            else max(1, options.min_replicas or 1),
            "target_ongoing_requests": options.target_ongoing_requests or float(serving.max_batch_size),
        }
    else:
        deployment["num_replicas"] = options.num_replicas or settings.replicas
    return deployment


def ingress_deployment_options(settings: Settings) -> dict[str, Any]:
    return {
        "name": INGRESS_NAME,
        "num_replicas": settings.ingress_replicas,
        "ray_actor_options": {"num_cpus": settings.ingress_num_cpus},
        # Requests in one ingress replica at once (reading, decoding, waiting for a model): the
        # service's own admission (memory budget, queues) bounds them further.
        "max_ongoing_requests": settings.max_connections,
        "graceful_shutdown_timeout_s": settings.drain_timeout_s + 5.0,
        "logging_config": logging_config(settings),
    }


def logging_config(settings: Settings) -> dict[str, Any]:
    """Ray Serve's logging of a deployment: the service's level; a line per request only with
    `access_log`, as in the single-process server."""
    return {"log_level": settings.log_level.upper(), "enable_access_log": settings.access_log}


def cpus_needed(deployments: list[dict[str, Any]]) -> float:
    """Logical CPUs the deployments reserve at their most replicas."""
    total = 0.0
    for options in deployments:
        replicas = options.get("num_replicas") or options.get("autoscaling_config", {}).get("max_replicas", 1)
        total += replicas * options["ray_actor_options"].get("num_cpus", 0.0)
    return total


def whole_cpus(amount: float) -> int:
    return max(1, math.ceil(amount - 1e-9))
