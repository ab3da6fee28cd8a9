"""`InferenceContext`: one inference request's model, deadline and clock, and the two ways its
handler leaves the event loop (worker threads for CPU work, the model's batcher for compute)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from easerve.service.batcher import BatchOutcome, Tensors
from easerve.service.repository import ServedModel
from easerve.service.schemas import Timings

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class InferenceContext:
    model: ServedModel
    # On time.perf_counter(): uvloop's loop.time() only ticks in whole milliseconds, too coarse
    # for the reported timings.
    started: float  # when the handler began
    deadline: float
    workers: Executor

    async def offload(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run CPU work (decode, pre-/post-processing) on a worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.workers, functools.partial(function, *args, **kwargs))

    async def infer(self, inputs: Tensors) -> BatchOutcome:
        """Queue `inputs` (batch first) on the model's batcher and wait for the outputs."""
        return await self.model.ready_batcher().submit(inputs, self.deadline)

    def response_fields(self, outcome: BatchOutcome) -> dict[str, object]:
        """The fields every inference response starts with (`schemas.InferenceResponse`)."""
        total_s = time.perf_counter() - self.started
        return {
            "model": self.model.name,
            "attention": self.model.manifest.attention,
            "backend": self.model.backend,
            "batch_size": outcome.batch_size,
            "timings": Timings(
                queue_ms=outcome.queue_s * 1000, compute_ms=outcome.compute_s * 1000, total_ms=total_s * 1000
            ),
        }
