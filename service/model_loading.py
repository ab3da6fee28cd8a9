"""Loading one model: choose the variant to serve, build and warm up its instances, and give it a
batcher configured from its serving configuration.

Precision: `fp32`, `fp16` or `int8` serve that graph when export wrote it within its accuracy
gate, else FP32 (with the reason logged and shown in `/v1/models`). `auto` measures each allowed
variant here, at warm-up (a few calls at the model's typical batch), and serves the fastest:
speed-ups recorded at export time were measured on another machine, and INT8 in particular is
slower than FP32 on CPUs without fast integer dot products.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Awaitable, Callable

import numpy as np

from easerve.artifacts.manifest import VariantName
from easerve.artifacts.shapes import concrete_shape
from easerve.service.batcher import BatchingConfig, BatchMemory, BatchObserver, DynamicBatcher
from easerve.service.contract import served_working_bytes, tensors_working_bytes
from easerve.service.model_files import ModelFiles
from easerve.service.repository import ServedModel
from easerve.service.runners.base import Runner, RunnerFactory, on_accelerator
from easerve.service.scheduler.device import DeviceScheduler
from easerve.service.scheduler.latency import LatencyModel, profile_sizes

logger = logging.getLogger(__name__)

# How `auto` times a variant: calls after the warm-up, at this batch (or the max batch if less).
TIMED_CALLS = 5
TYPICAL_BATCH = 8


def zero_inputs(files: ModelFiles, batch: int) -> dict[str, np.ndarray]:
    """Zeros of every input at `batch` and the manifest's sizes."""
    manifest = files.manifest
    return {
        tensor.name: np.zeros(concrete_shape(tensor, manifest.preprocessing, batch), dtype=tensor.dtype)
        for tensor in manifest.inputs
    }


def largest_warm_batch(files: ModelFiles, max_batch_size: int, memory_bytes: int) -> int:
    """The largest batch warm-up runs: the max batch, or the most items whose predicted working
    memory at the manifest's size fits `memory_bytes` (the server's budget: no larger batch can
    be admitted, and warming one up would take that memory), at least 1."""
    per_item = served_working_bytes(files.manifest, 1)
    if not per_item:
        return max_batch_size
    return max(1, min(max_batch_size, memory_bytes // per_item))


def warm_up(runner: Runner, files: ModelFiles, largest: int) -> None:
    """Run zeros at batch 1 and at `largest` (the max batch, or `largest_warm_batch`), so
    allocations, kernel choices and engine profiles are settled before the model reports ready."""
    for batch in sorted({1, largest}):
        runner.run(zero_inputs(files, batch))


def profile_latency(runner: Runner, files: ModelFiles, max_batch_size: int, largest: int) -> LatencyModel:
    """The scheduler's latency model of `runner`, from one timed run at each profile size up to
    `largest` after a first untimed one (the first run of a shape settles its allocations)."""
    profile = {}
    for batch in profile_sizes(largest):
        inputs = zero_inputs(files, batch)
        runner.run(inputs)
        started = time.perf_counter()
        runner.run(inputs)
        profile[batch] = time.perf_counter() - started
    return LatencyModel(max_batch_size, profile)


def allowed_variants(files: ModelFiles, precision: str) -> tuple[list[VariantName], str]:
    """The variants `precision` allows for this model (best first for a fixed precision), and
    why: only graphs export wrote and whose recorded metric is within their accuracy gate."""
    usable = [variant.name for variant in files.manifest.variants() if variant.within_gate]
    if precision == "auto":
        return usable, f"auto: measured {', '.join(usable)} here"
    if precision in usable:
        return [precision], f"precision {precision} asked for"
    return ["fp32"], f"precision {precision} asked for, but export kept no {precision} graph within its gate: fp32"


def seconds_per_call(runner: Runner, files: ModelFiles, batch: int) -> float:
    """The median time of `TIMED_CALLS` calls at `batch` (after one untimed call)."""
    inputs = zero_inputs(files, batch)
    runner.run(inputs)
    times = []
    for _ in range(TIMED_CALLS):
        started = time.perf_counter()
        runner.run(inputs)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def choose_variant(
    model: ServedModel,
    factory: RunnerFactory,
    largest: int,
    timer: Callable[[Runner, ModelFiles, int], float] = seconds_per_call,
) -> Runner:
    """Point `model.files` at the variant to serve (recording why) and return its first runner,
    warmed up (at batch 1 and `largest`). With several candidates each is built and timed, and
    all but the fastest closed."""
    candidates, reason = allowed_variants(model.files, model.serving.precision)
    batch = min(TYPICAL_BATCH, model.max_batch_size)
    if len(candidates) == 1:
        files = model.files.with_variant(candidates[0])
        files.verify()
        runner = factory(files, model.max_batch_size)
        warm_up(runner, files, largest)
        model.files, model.variant_reason = files, reason
        return runner
    timed: list[tuple[float, VariantName, Runner]] = []
    try:
        for name in candidates:
            files = model.files.with_variant(name)
            files.verify()
            runner = factory(files, model.max_batch_size)
            timed.append((timer(runner, files, batch), name, runner))
    except Exception:
        for _, _, runner in timed:
            runner.close()
        raise
    timed.sort(key=lambda entry: entry[0])
    for _, _, runner in timed[1:]:
        runner.close()
    seconds, name, runner = timed[0]
    figures = ", ".join(f"{variant} {1000 * s:.2f} ms" for s, variant, _ in timed)
    model.files = model.files.with_variant(name)
    model.variant_reason = f"auto: {name} was fastest at batch {batch} here ({figures})"
    warm_up(runner, model.files, largest)
    return runner


def prepare_runners(model: ServedModel, factory: RunnerFactory, memory_bytes: int) -> None:
    """`model.runners`: one warmed-up runner per instance of the chosen variant, warmed and
    profiled up to the largest batch `memory_bytes` (the server's budget) could admit; on a
    failure none is kept."""
    largest = largest_warm_batch(model.files, model.max_batch_size, memory_bytes)
    runners = [choose_variant(model, factory, largest)]
    try:
        for _ in range(model.serving.instances - 1):
            runners.append(factory(model.files, model.max_batch_size))
            warm_up(runners[-1], model.files, largest)
    except Exception:
        for runner in runners:
            runner.close()
        raise
    model.runners = runners
    model.latency = profile_latency(runners[0], model.files, model.max_batch_size, largest)
    model.backend_name = f"{runners[0].backend}/{model.files.variant_name}"
    logger.info(
        "%s: %d instance(s) of %s loaded, warmed up at batch 1 and %d (%s)",
        model.name,
        len(runners),
        model.backend,
        largest,
        model.variant_reason,
    )


# Makes a model ready to compute: sets its runners (if any) and its batcher; the caller marks it
# ready. `local_loader` is the service's own; a deployment elsewhere (Ray Serve) passes another.
ModelLoader = Callable[[ServedModel], Awaitable[None]]


def local_loader(
    factory: RunnerFactory, observer: BatchObserver, scheduler: DeviceScheduler, memory_bytes: int
) -> ModelLoader:
    """Runners built here (on a thread: loading takes seconds), warmed within `memory_bytes`,
    and a batcher over them, on this process's device `scheduler`."""

    async def load(model: ServedModel) -> None:
        await asyncio.to_thread(prepare_runners, model, factory, memory_bytes)
        model.batcher = new_batcher(model, observer, scheduler, memory_bytes)

    return load


def new_batcher(
    model: ServedModel, observer: BatchObserver, scheduler: DeviceScheduler, memory_bytes: int
) -> DynamicBatcher:
    """A started batcher over `model.runners`, configured from the model's serving settings,
    its batches dispatched by the device `scheduler` with the model's latency model (probed
    with zeros at batch 1 when it needs measuring), none of them predicted to need more than
    `memory_bytes` of working memory."""
    manifest = model.manifest
    serving = model.serving
    batcher = DynamicBatcher(
        model.name,
        [runner.run for runner in model.runners],
        BatchingConfig(
            max_batch_size=serving.max_batch_size,
            max_queue_delay_s=serving.max_queue_delay_ms / 1000.0,
            max_queue_size=serving.max_queue_size,
            max_waiting=serving.max_waiting,
            preferred_batch_sizes=serving.preferred_batch_sizes,
        ),
        observer,
        scheduler,
        model.latency,
        serving.priority,
        BatchMemory(lambda shapes: tensors_working_bytes(manifest, shapes), memory_bytes),
        zero_inputs(model.files, 1),
        # On a GPU the worker threads decode the next requests while a batch computes; on the
        # CPU both take the same cores, and a batch's images are decoded where it runs.
        takes_deferred=not any(on_accelerator(runner) for runner in model.runners),
    )
    batcher.start()
    return batcher
