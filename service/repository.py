"""The served models: each one's files, runner, batcher and state, and how requests pick one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from easerve.artifacts.manifest import AttentionKind, Manifest
from easerve.artifacts.tasks import TaskName
from easerve.service.batcher import Batcher
from easerve.service.errors import InvalidInput, NotFound, Unavailable
from easerve.service.model_config import ServingConfig
from easerve.service.model_files import ModelFiles
from easerve.service.runners.base import Runner
from easerve.service.scheduler.latency import LatencyModel

ModelState = Literal["loading", "ready", "failed", "draining", "stopped", "unloaded"]
DEFAULT_ATTENTION: AttentionKind = "ea"


@dataclass(eq=False)
class ServedModel:
    """One model of the repository; `runners` (one per instance) and `batcher` exist once it
    has loaded, and `files` then points at the variant they were built from."""

    files: ModelFiles
    serving: ServingConfig
    state: ModelState = "loading"
    runners: list[Runner] = field(default_factory=list)
    batcher: Batcher | None = None
    error: str | None = None
    variant_reason: str = ""  # why this variant is served (the precision setting, or auto's timings)
    backend_name: str | None = None  # set when the runners are built
    latency: LatencyModel | None = None  # profiled when the runners are built, refitted by its batcher
    # The version that took over while this one drains: requests prepared for this one go there
    # when it takes the same inputs.
    replaced_by: ServedModel | None = None

    @property
    def max_batch_size(self) -> int:
        return self.serving.max_batch_size

    @property
    def name(self) -> str:
        return self.files.name

    @property
    def manifest(self) -> Manifest:
        return self.files.manifest

    @property
    def backend(self) -> str | None:
        """The runner and the variant it serves, e.g. "onnxruntime-cpu/int8" (kept after the
        runners are released, for the answers of requests it computed)."""
        return self.backend_name

    @property
    def version(self) -> int:
        return self.files.version

    async def retire(self, drain_timeout_s: float, final_state: ModelState = "stopped") -> None:
        """Answer what its batcher holds (within `drain_timeout_s`), then release the batcher
        and the runners."""
        self.state = "draining"
        if self.batcher is not None:
            await self.batcher.drain(drain_timeout_s)
            self.batcher.close()
        for runner in self.runners:
            runner.close()
        self.batcher, self.runners = None, []
        self.state = final_state

    def takes_the_inputs_of(self, other: ServedModel) -> bool:
        return (
            self.manifest.inputs == other.manifest.inputs
            and self.manifest.preprocessing == other.manifest.preprocessing
        )

    def ready_batcher(self) -> Batcher:
        """The batcher of a ready model (or of the version that replaced it, when that takes the
        same inputs); Unavailable while loading, failed, unloaded or shutting down."""
        successor = self.replaced_by
        if self.state != "ready" and successor is not None and successor.takes_the_inputs_of(self):
            return successor.ready_batcher()
        if self.state != "ready" or self.batcher is None:
            detail = f": {self.error}" if self.error else ""
            raise Unavailable(f"model {self.name} is {self.state}{detail}")
        return self.batcher


class ModelRepository:
    """The models this service serves, by name, in name order."""

    def __init__(self, models: list[ServedModel]) -> None:
        self._models = {model.name: model for model in sorted(models, key=lambda m: m.name)}

    def __iter__(self):
        return iter(list(self._models.values()))

    def install(self, model: ServedModel) -> ServedModel | None:
        """Serve `model` under its name from now on; the model it replaces, if any."""
        previous = self._models.get(model.name)
        self._models = dict(sorted({**self._models, model.name: model}.items()))
        return previous

    def names(self) -> list[str]:
        return list(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def get(self, name: str) -> ServedModel:
        """The model called `name`; NotFound lists the served ones."""
        try:
            return self._models[name]
        except KeyError:
            raise NotFound(f"unknown model {name!r}; served: {', '.join(self._models) or 'none'}") from None

    def for_task(self, task: TaskName, name: str | None, attention: AttentionKind | None) -> ServedModel:
        """The model a task endpoint uses: `name` if given (it must serve `task`, and have the
        `attention` kind if that is given too), else the first served model of `task` with
        `attention` (default: External Attention)."""
        if name is not None:
            model = self.get(name)
            if model.manifest.task != task:
                raise InvalidInput(f"model {name} is a {model.manifest.task} model, not {task}")
            if attention is not None and model.manifest.attention != attention:
                raise InvalidInput(f"model {name} uses {model.manifest.attention} attention, not {attention}")
            return model
        kind = attention or DEFAULT_ATTENTION
        for model in self._models.values():
            if model.manifest.task == task and model.manifest.attention == kind:
                return model
        same_task = [m.name for m in self._models.values() if m.manifest.task == task]
        raise NotFound(
            f"no {task} model with {kind} attention is served; {task} models: {', '.join(same_task) or 'none'}"
        )
