"""Per-model serving configuration, as data next to the model (Triton's `config.pbtxt` idea).

A model folder may hold `serving.json` with any of the keys of `ModelServing`; the server's
global settings are the defaults. One-off overrides come as `NAME:KEY=VALUE` entries of the
`model_overrides` setting (`EASERVE_MODEL_OVERRIDES`, then each `--model-config` flag), so the
precedence is: global setting < serving.json < environment < flag. An invalid value is a
`ModelConfigError` naming the model and the key (`easerve serve` exits 2).

    {"max_batch_size": 8, "preferred_batch_sizes": [4, 8], "max_queue_delay_ms": 2,
     "max_queue_size": 64, "instances": 2, "precision": "int8", "default_timeout_s": 5, "priority": 1}
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from easerve.service.model_files import ModelFiles, ModelFilesError, discover_models
from easerve.service.settings import Precision, Settings

SERVING_FILE = "serving.json"
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class ModelConfigError(ValueError):
    """A per-model setting that cannot be used; the message names the model and the key."""


class ModelServing(BaseModel):
    """One model's serving settings; a key left out takes the global setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int | None = Field(default=None, ge=1, description="cap on the batch size")
    preferred_batch_sizes: list[int] = Field(
        default=[], description="batch sizes to form when more is queued (e.g. an engine's tuned sizes)"
    )
    max_queue_delay_ms: float | None = Field(default=None, ge=0)
    max_queue_size: int | None = Field(default=None, ge=1)
    instances: int | None = Field(default=None, ge=1, le=64)
    precision: Precision | None = None
    default_timeout_s: float | None = Field(default=None, gt=0)
    priority: int = Field(
        default=0,
        ge=-100,
        le=100,
        description="rank on the device under the slack scheduler: higher runs first when both can wait",
    )


@dataclass(frozen=True)
class ServingConfig:
    """What one model is served with: per-model values over the global settings."""

    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_ms: float
    max_queue_size: int
    max_waiting: int
    instances: int
    precision: Precision
    default_timeout_s: float
    priority: int = 0


def parse_overrides(entries: list[str]) -> dict[str, dict[str, object]]:
    """`NAME:KEY=VALUE` entries (in order, later wins) by model name; values parsed as JSON
    where they are JSON (`8`, `[4, 8]`, `"int8"`), else kept as text (`int8`)."""
    overrides: dict[str, dict[str, object]] = {}
    for entry in entries:
        name, colon, assignment = entry.partition(":")
        key, equals, value = assignment.partition("=")
        if not (colon and equals and name and key):
            raise ModelConfigError(f"model config {entry!r}: expected NAME:KEY=VALUE")
        try:
            parsed: object = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        overrides.setdefault(name, {})[key.strip()] = parsed
    return overrides


def read_config_file(path: Path, name: str) -> dict[str, object]:
    """The JSON object in model `name`'s configuration file `path` ({} when there is none)."""
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ModelConfigError(f"{name}: {path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise ModelConfigError(f"{name}: {path} must hold a JSON object")
    return values


def validated(schema: type[M], values: dict[str, object], name: str, what: str = "") -> M:
    """`values` as `schema`; ModelConfigError names the model and the first invalid key."""
    try:
        return schema.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "?"
        raise ModelConfigError(
            f"model {name}: invalid {what}{key!r}: {first['msg']} (got {values.get(key)!r})"
        ) from None


def serving_config(
    name: str, directory: Path, manifest_max_batch_size: int, settings: Settings, overrides: dict[str, object]
) -> ServingConfig:
    """The configuration model `name` (in `directory`) is served with; ModelConfigError names the
    model and the key of an invalid value."""
    own = validated(ModelServing, read_config_file(directory / SERVING_FILE, name) | overrides, name)
    cap = own.max_batch_size if own.max_batch_size is not None else settings.max_batch_size
    max_batch = min(cap, manifest_max_batch_size) if cap is not None else manifest_max_batch_size
    preferred = tuple(sorted(size for size in set(own.preferred_batch_sizes)))
    if any(not 1 <= size <= max_batch for size in preferred):
        raise ModelConfigError(
            f"model {name}: invalid 'preferred_batch_sizes': each must be in 1..{max_batch}, got {list(preferred)}"
        )
    return ServingConfig(
        max_batch_size=max_batch,
        preferred_batch_sizes=preferred,
        max_queue_delay_ms=_own_or(own.max_queue_delay_ms, settings.max_queue_delay_ms),
        max_queue_size=_own_or(own.max_queue_size, settings.max_queue_size),
        max_waiting=settings.max_waiting,
        instances=_own_or(own.instances, settings.instances),
        precision=_own_or(own.precision, settings.precision),
        default_timeout_s=_own_or(own.default_timeout_s, settings.default_timeout_s),
        priority=own.priority,
    )


def _own_or(own: T | None, default: T) -> T:
    return default if own is None else own


def served_model_files(settings: Settings, configured: Iterable[str]) -> list[ModelFiles]:
    """The models `settings` serves; ModelFilesError when none (or a named one) is found,
    ModelConfigError when a per-model setting names a model among `configured` not served."""
    found = discover_models(settings.weights_dirs, settings.models)
    if not found:
        raise ModelFilesError(
            f"no model found in {', '.join(map(str, settings.weights_dirs))}: a model is a folder "
            "<weights dir>/<model>/ with manifest.json and model.onnx, as `easerve export` writes it"
        )
    unknown = sorted(set(configured) - {files.name for files in found})
    if unknown:
        raise ModelConfigError(f"--model-config names model(s) not served: {', '.join(unknown)}")
    return found
