"""Every setting of the service, in one pydantic-settings object: the only source of each
setting's type, default, limits, help text, environment variable and command-line flag.

Values come from, in rising priority: the defaults below, `EASERVE_*` environment variables,
and the keyword arguments `Settings(...)` is built with (`easerve serve` passes its flags that
way; the flags and the README's settings table are generated from these fields by
`service.settings_cli`). List settings read from the environment as separated strings:
`EASERVE_WEIGHTS_DIRS` by the path separator (`weights:/srv/more`), `EASERVE_MODELS` by commas
or spaces.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from easerve.artifacts.tensorrt import default_cache_root

Backend = Literal["auto", "onnxruntime", "tensorrt", "torch"]
Precision = Literal["auto", "fp32", "fp16", "int8"]
ModelControlMode = Literal["none", "explicit", "poll"]
Engine = Literal["local", "ray"]
SchedulerPolicy = Literal["slack", "fifo", "free"]


@dataclass(frozen=True)
class Flag:
    """How a setting appears on `easerve serve`'s command line and in the settings table.

    `name` is the flag when it is not the field's name in kebab case; `env_only` settings have
    no flag (a secret must not show in the process list); `shown_default` replaces the default's
    repr in help and docs where the value itself says little (`None`, byte counts)."""

    group: str
    name: str | None = None
    metavar: str | None = None
    shown_default: str | None = None
    env_only: bool = False
    # A list whose flags add to the environment's entries instead of replacing them.
    accumulates: bool = False


class Settings(BaseSettings):
    """The service's configuration; the README's settings table is generated from it."""

    model_config = SettingsConfigDict(env_prefix="EASERVE_", extra="forbid", frozen=True)

    # What to serve.
    weights_dirs: Annotated[list[Path], NoDecode, Flag("models", "--weights-dir", "DIR")] = Field(
        default=[Path("weights")],
        description="folders of `<model>/manifest.json` folders (flag repeatable); the first holding a name wins",
    )
    models: Annotated[list[str], NoDecode, Flag("models", metavar="NAME", shown_default="all found")] = Field(
        default=[], description="models to serve"
    )
    backend: Annotated[Backend, Flag("models")] = Field(
        default="auto", description="runner backend; `auto` picks the best available and logs why"
    )
    engine_cache_dir: Annotated[Path, Flag("models", metavar="DIR", shown_default="~/.cache/easerve/engines")] = Field(
        default_factory=default_cache_root,
        description="TensorRT engines and timing caches, keyed by content; shared with `easerve export --format trt`",
    )
    model_control: Annotated[ModelControlMode, Flag("models")] = Field(
        default="none",
        description="`none`: the models found at start, fixed; `explicit`: also loaded, unloaded and reloaded "
        "through `/v2/repository`; `poll`: changed model folders picked up every `repository_poll_s`",
    )
    repository_poll_s: Annotated[float, Flag("models", metavar="S")] = Field(
        default=5.0, gt=0, description="with `model_control=poll`, how often the weights folders are scanned"
    )
    precision: Annotated[Precision, Flag("models")] = Field(
        default="fp32",
        description="the variant served: `fp32`, `fp16` or `int8` (exported and within its accuracy gate), or "
        "`auto`: the fastest such variant measured at warm-up on this machine",
    )
    intra_op_threads: Annotated[int, Flag("models", metavar="N", shown_default="0 (runtime default)")] = Field(
        default=0, ge=0, description="threads inside one operator"
    )
    inter_op_threads: Annotated[int, Flag("models", metavar="N", shown_default="0 (runtime default)")] = Field(
        default=0, ge=0, description="threads across operators"
    )
    intra_op_spinning: Annotated[bool, Flag("models")] = Field(
        default=False,
        description="idle onnxruntime threads spin for work: quicker lone requests, CPU taken from everything else",
    )

    model_overrides: Annotated[
        list[str], NoDecode, Flag("models", "--model-config", "NAME:KEY=VALUE", "none", accumulates=True)
    ] = Field(
        default=[],
        description="one model's serving setting over its `serving.json` (repeatable; environment: comma-separated, "
        "flags after it), e.g. `eamlp-ea-tiny:max_batch_size=8`",
    )

    # Where to listen.
    host: Annotated[str, Flag("server")] = Field(default="127.0.0.1", description="listen address")
    port: Annotated[int, Flag("server")] = Field(default=8000, ge=0, le=65535, description="listen port")
    workers: Annotated[int, Flag("server", metavar="N")] = Field(
        default=4, ge=1, description="threads for decoding, pre- and post-processing of light requests"
    )
    log_level: Annotated[Literal["critical", "error", "warning", "info", "debug"], Flag("server")] = Field(
        default="info", description="log level"
    )
    access_log: Annotated[bool, Flag("server")] = Field(
        default=False, description="log every HTTP request (costs throughput)"
    )
    shutdown_grace_s: Annotated[float, Flag("server", "--shutdown-grace", "S")] = Field(
        default=3.0,
        ge=0,
        description="on SIGTERM, keep accepting and answering this long (readyz 503, every response "
        "`Connection: close`) before draining, as a Kubernetes preStop wait would",
    )
    drain_timeout_s: Annotated[float, Flag("server", "--drain-timeout", "S")] = Field(
        default=30.0, ge=0, description="after the grace period, how long queued work may take (the rest: 503)"
    )

    http_workers: Annotated[int, Flag("server", metavar="N")] = Field(
        default=1,
        ge=1,
        le=256,
        description="HTTP worker processes accepting on one port (decoding, pre- and post-processing); they hand "
        "the tensors to this process's one batcher per model through shared memory, so batches form across them "
        "(1: everything in this process; docs/scale-out.md)",
    )

    # How the service runs: this one process, or a Ray Serve application (service/ray_serve).
    engine: Annotated[Engine, Flag("engine")] = Field(
        default="local",
        description="`local`: this process; `ray`: a Ray Serve application, one deployment per model, on a new local "
        "cluster or the one at `ray_address` (needs `pip install easerve[ray]`; docs/scale-out.md)",
    )
    ray_address: Annotated[str | None, Flag("engine", "--address", "ADDR", "a new local cluster")] = Field(
        default=None, description="with `engine=ray`: the cluster to join (`auto`: the one running on this machine)"
    )
    replicas: Annotated[int, Flag("engine", metavar="N")] = Field(
        default=1,
        ge=1,
        description="with `engine=ray`: replicas of each model deployment, unless its `ray.json` or "
        "`--model-config NAME:num_replicas=N` (or min/max_replicas) says otherwise",
    )

    ingress_replicas: Annotated[int, Flag("engine", metavar="N")] = Field(
        default=1, ge=1, description="with `engine=ray`: replicas of the ingress (HTTP routes, decoding)"
    )
    ingress_num_cpus: Annotated[float, Flag("engine", "--ingress-cpus", "CPUS")] = Field(
        default=1.0,
        ge=0,
        description="with `engine=ray`: logical CPUs each ingress replica reserves (less lets it fit on small nodes)",
    )
    model_num_cpus: Annotated[float, Flag("engine", "--model-cpus", "CPUS")] = Field(
        default=1.0,
        ge=0,
        description="with `engine=ray`: logical CPUs of a model replica, unless its `ray.json` or "
        "`--model-config NAME:num_cpus=C` says otherwise",
    )
    model_num_gpus: Annotated[float, Flag("engine", "--model-gpus", "GPUS")] = Field(
        default=0.0, ge=0, description="with `engine=ray`: GPUs (or a fraction of one) of a model replica"
    )
    deploy_timeout_s: Annotated[float, Flag("engine", "--deploy-timeout", "S")] = Field(
        default=600.0,
        gt=0,
        description="with `engine=ray`: how long `easerve serve` waits for the application to be running before it "
        "deletes it and exits 1 (a deployment that cannot be placed is named in the log long before)",
    )

    # Connections.
    header_timeout_s: Annotated[float, Flag("connections", "--header-timeout", "S")] = Field(
        default=10.0, gt=0, description="time to receive a request's line and headers; then 408 and close"
    )
    body_timeout_s: Annotated[float, Flag("connections", "--body-timeout", "S")] = Field(
        default=30.0, gt=0, description="time to receive a request's body (and never past its deadline); then 408"
    )
    keep_alive_timeout_s: Annotated[float, Flag("connections", "--keep-alive-timeout", "S")] = Field(
        default=5.0, gt=0, description="an idle keep-alive connection is closed after this long"
    )
    max_connections: Annotated[int, Flag("connections", metavar="N")] = Field(
        default=1000,
        ge=1,
        description="open connections; past it new ones get 503 + close at once, except `/healthz` and `/readyz`",
    )

    # Scheduling.
    scheduler: Annotated[SchedulerPolicy, Flag("scheduling")] = Field(
        default="slack",
        description="which model's batch runs next on the device: `slack` (least slack first, the largest batch "
        "that meets its deadline; hopeless requests refused at the door or dropped before compute), `fifo` "
        "(Triton-style: oldest first, one batch at a time) or `free` (every model runs whenever it has work)",
    )
    device_slots: Annotated[int, Flag("scheduling", metavar="N", shown_default="0 (auto)")] = Field(
        default=0,
        ge=0,
        le=64,
        description="batches computing at once on the device (`slack`, `fifo`); 0: 1 for `fifo`, and for `slack` "
        "the cores over `intra_op_threads`, or 2 with the runtime's default threads",
    )
    max_batch_size: Annotated[int | None, Flag("scheduling", metavar="N", shown_default="the manifest's")] = Field(
        default=None, ge=1, description="cap on the batch size (images count one each)"
    )
    max_queue_delay_ms: Annotated[float, Flag("scheduling", metavar="MS")] = Field(
        default=0.0, ge=0, description="a batch that is not full waits until the oldest request has waited this long"
    )
    max_queue_size: Annotated[int, Flag("scheduling", metavar="N")] = Field(
        default=256,
        ge=1,
        description="queued requests per model (with those being decoded for it); more: 429 + Retry-After",
    )
    max_waiting: Annotated[int, Flag("scheduling", metavar="N")] = Field(
        default=1024,
        ge=0,
        description="with `scheduler=slack`, requests per model held at the door, bodies unread, while its queue is "
        "full (let in first come first in; refused once their deadline would not allow it); more: 429",
    )
    instances: Annotated[int, Flag("scheduling", metavar="N")] = Field(
        default=1,
        ge=1,
        le=64,
        description="instances of each model (Triton's `instance_group` count): runners computing batches side by side",
    )
    default_timeout_s: Annotated[float, Flag("scheduling", "--timeout", "S")] = Field(
        default=30.0, gt=0, description="deadline of a request that sets none; past it: 504"
    )

    # Input limits.
    max_body_bytes: Annotated[int, Flag("input limits", metavar="N", shown_default="32 MiB")] = Field(
        default=32 * 1024 * 1024, ge=1, description="request body limit: 413"
    )
    max_images_per_request: Annotated[int, Flag("input limits", "--max-images", "N")] = Field(
        default=16, ge=1, description="images per request and `n` of `/v1/generate`: 413"
    )
    max_image_pixels: Annotated[int, Flag("input limits", metavar="N", shown_default="25 000 000")] = Field(
        default=25_000_000,
        ge=1,
        description="width x height of one image, checked from its header before decoding: 413",
    )
    max_points: Annotated[int, Flag("input limits", metavar="N", shown_default="200 000")] = Field(
        default=200_000, ge=1, description="points of one cloud: 413"
    )
    max_model_pixels: Annotated[int, Flag("input limits", metavar="N", shown_default="1024 x 1024")] = Field(
        default=1024 * 1024,
        ge=1,
        description="height x width of one image tensor sent through v2 (v1 feeds each model its own size): 413",
    )
    max_model_points: Annotated[int, Flag("input limits", metavar="N")] = Field(
        default=8192, ge=1, description="points of one cloud tensor sent through v2 (v1 resamples to the model's): 413"
    )
    max_overlay_pixels: Annotated[int, Flag("input limits", metavar="N", shown_default="4 194 304")] = Field(
        default=4 * 1024 * 1024,
        ge=1,
        description="a segmentation overlay larger than this is drawn scaled down (the mask stays full size)",
    )

    # Cost budgets: the working memory a request needs, estimated from headers before decoding.
    request_memory_mb: Annotated[float, Flag("cost budgets", metavar="MB")] = Field(
        default=512.0, gt=0, description="estimated working memory of one request: more is 413"
    )
    server_memory_mb: Annotated[float, Flag("cost budgets", metavar="MB")] = Field(
        default=1536.0,
        gt=0,
        description="estimated working memory of every request in flight together: past it, 503 + Retry-After",
    )
    heavy_request_mb: Annotated[float, Flag("cost budgets", metavar="MB")] = Field(
        default=32.0,
        gt=0,
        description="requests estimated above this run on the heavy worker threads, never delaying light ones",
    )
    heavy_workers: Annotated[int, Flag("cost budgets", metavar="N")] = Field(
        default=1, ge=1, description="threads for decoding and post-processing heavy requests"
    )

    api_key: Annotated[SecretStr | None, Flag("security", env_only=True, shown_default="none")] = Field(
        default=None,
        description="when set, inference routes need `Authorization: Bearer <key>` or `X-API-Key: <key>`, "
        "checked before the body is read",
    )
    protect_metadata: Annotated[bool, Flag("security")] = Field(
        default=False,
        description="with `api_key` set, also require it for `/metrics`, `/v1/models`, `/v2` metadata, "
        "`/docs` and `/openapi.json` (health probes stay open)",
    )

    @field_validator("weights_dirs", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part]
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return value.replace(",", " ").split()
        return value

    @field_validator("model_overrides", mode="before")
    @classmethod
    def _split_entries(cls, value: object) -> object:
        if isinstance(value, str):
            return [entry.strip() for entry in value.split(",") if entry.strip()]
        return value
