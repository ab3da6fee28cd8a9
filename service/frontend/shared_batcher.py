"""The batcher an HTTP worker's models have: a stand-in that queues each request on the model's
one `DynamicBatcher` in the model process (`channel`), and the loader that connects them.

Everything before and after the batcher (API key, body limits, decoding, the checks against the
model's contract, memory budget, deadlines, answers) is the worker's own `create_app`, the same
code as in one process. The model process answers what its batcher answers: outputs, 429 +
Retry-After, 504, 422 / 500 for a request that fails alone, 503 while it drains.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from easerve.artifacts.manifest import Manifest
from easerve.service.batcher import BatchOutcome, StandInBatcher, Tensors
from easerve.service.contract import output_nbytes
from easerve.service.frontend.channel import ModelChannel
from easerve.service.frontend.wire import Header, aligned
from easerve.service.metrics import ServiceMetrics
from easerve.service.model_control import configured_model
from easerve.service.model_files import read_model_files
from easerve.service.model_loading import ModelLoader
from easerve.service.repository import ModelRepository, ServedModel
from easerve.service.settings import Settings

if TYPE_CHECKING:
    from easerve.service.batcher import Finish

logger = logging.getLogger(__name__)

# A light answer (`Finish.light`: a class ranking, a few boxes) of outputs up to this size is made
# on the event loop; any other (masks, part labels, images, large outputs) on a thread.
_INLINE_FINISH_BYTES = 64 * 1024


def output_bytes(manifest: Manifest, inputs: Tensors) -> int:
    """The arena bytes of the outputs of `inputs`; 0 when an output has a dimension no input
    gives (its outputs then come in the answer's frame)."""
    sizes = output_nbytes(manifest, {name: array.shape for name, array in inputs.items()})
    return 0 if sizes is None else sum(aligned(size) for size in sizes)


class SharedMemoryBatcher(StandInBatcher):
    """Stands in for a model's `DynamicBatcher` in an HTTP worker."""

    def __init__(self, model: ServedModel, channel: ModelChannel) -> None:
        super().__init__(model.name)
        self._manifest = model.manifest
        self._channel = channel

    async def submit(self, inputs: Tensors, deadline: float, finish: Finish | None = None) -> BatchOutcome:
        """The model process's answer to `inputs`; `finish` (a closure over this worker's
        request) makes its answer here, on the event loop only when it is light and small."""
        with self._outstanding():
            answer_bytes = output_bytes(self._manifest, inputs)
            outcome = await self._channel.infer(self.model, inputs, deadline, answer_bytes)
            light = finish is not None and finish.light and 0 < answer_bytes <= _INLINE_FINISH_BYTES
            return await self._answered(outcome, finish, on_the_loop=light)


def shared_memory_loader(
    channel: ModelChannel, settings: Settings
) -> Callable[[ModelRepository, ServiceMetrics], ModelLoader]:
    """`create_app`'s `model_loader` for a worker: loading a model waits until the model process
    has loaded it and serves it as that process does (the version folder it serves, or unloaded
    there: unloaded here), through a `SharedMemoryBatcher`. The batch metrics are the model
    process's: the worker's `/metrics` shows every process's samples (`worker.py` passes
    `shared_metrics.shared_registry` as what it renders)."""

    def loader(repository: ModelRepository, metrics: ServiceMetrics) -> ModelLoader:
        async def connect(model: ServedModel) -> None:
            described = await channel.describe(model.name)
            if described["state"] != "ready":
                model.state = "unloaded"
                return
            served = await asyncio.to_thread(described_model, described, settings)
            model.files, model.serving = served.files, served.serving
            attach(model, described, channel)

        return connect

    return loader


def described_model(described: Header, settings: Settings) -> ServedModel:
    """The model the model process `described` (the version folder it serves), configured as
    this worker's settings say, not connected yet."""
    files = read_model_files(Path(described["directory"]), described["version"])
    return configured_model(files.with_variant(described["variant"]), settings)


def attach(model: ServedModel, described: Header, channel: ModelChannel) -> None:
    """Serve `model` (as `described_model` made it) in this worker through the model process."""
    model.variant_reason = described["variant_reason"]
    model.backend_name = described["backend"]
    model.batcher = SharedMemoryBatcher(model, channel)
