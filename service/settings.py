"""Every setting of the service, in one pydantic-settings object.

Values come from, in rising priority: the defaults below, `EASERVE_*` environment variables,
and the keyword arguments `Settings(...)` is built with (the CLI passes its flags that way).
List settings read from the environment as separated strings: `EASERVE_WEIGHTS_DIRS` by the
path separator (`weights:/srv/more`), `EASERVE_MODELS` by commas or spaces.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Backend = Literal["auto", "onnxruntime", "tensorrt", "torch"]
BACKENDS: tuple[Backend, ...] = ("auto", "onnxruntime", "tensorrt", "torch")


class Settings(BaseSettings):
    """The service's configuration; see the README for the table of settings."""

    model_config = SettingsConfigDict(env_prefix="EASERVE_", extra="forbid", frozen=True)

    # What to serve.
    weights_dirs: Annotated[list[Path], NoDecode] = Field(
        default=[Path("weights")], description="folders holding <model>/manifest.json + model files"
    )
    models: Annotated[list[str], NoDecode] = Field(
        default=[], description="model names to serve; empty = every model found"
    )
    backend: Backend = Field(default="auto", description="runner: auto picks the best available")
    engine_cache_dir: Path = Field(
        default=Path.home() / ".cache" / "easerve" / "engines",
        description="TensorRT engines and timing caches, keyed by content",
    )
    tensorrt_fp16: bool = Field(default=False, description="build TensorRT engines in FP16")
    intra_op_threads: int = Field(default=0, ge=0, description="threads inside one operator (0: runtime default)")
    inter_op_threads: int = Field(default=0, ge=0, description="threads across operators (0: runtime default)")
    intra_op_spinning: bool = Field(
        default=False,
        description="idle intra-op threads spin for work: quicker lone requests, CPU taken from everything else",
    )

    # Where to listen.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = Field(default=False, description="log every HTTP request (costs throughput)")

    # Scheduling.
    max_batch_size: int | None = Field(
        default=None, ge=1, description="cap on the batch size (default: each manifest's max_batch_size)"
    )
    max_queue_delay_ms: float = Field(
        default=0.0, ge=0, description="how long the oldest queued request may wait for a batch to fill"
    )
    max_queue_size: int = Field(default=256, ge=1, description="queued requests per model before 429")
    instances: int = Field(
        default=1, ge=1, le=64, description="instances of each model: runners computing batches side by side"
    )
    default_timeout_s: float = Field(default=30.0, gt=0, description="deadline of a request without `timeout`")
    workers: int = Field(default=4, ge=1, description="threads for decoding, pre- and post-processing")
    drain_timeout_s: float = Field(default=30.0, ge=0, description="on SIGTERM, how long queued work may take")

    # Input limits.
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1, description="request body limit (413 above)")
    max_images_per_request: int = Field(default=16, ge=1, description="images per request, also `n` of generate")
    max_image_pixels: int = Field(default=25_000_000, ge=1, description="width x height of one decoded image")
    max_points: int = Field(default=200_000, ge=1, description="points in one point cloud")

    api_key: SecretStr | None = Field(default=None, description="when set, inference routes require it")

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

    def effective_max_batch_size(self, manifest_max_batch_size: int) -> int:
        """The batch size a model runs with: its manifest's, capped by `max_batch_size`."""
        if self.max_batch_size is None:
            return manifest_max_batch_size
        return min(self.max_batch_size, manifest_max_batch_size)
