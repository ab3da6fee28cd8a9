"""What a model costs without a server, the yardsticks of `easerve bench serve`:

- the ceiling: the runner's throughput on full batches (max batch size), images per second;
- the bare model: one runner call at batch 1;
- the bare pipeline: one request's whole work at batch 1 (decode, preprocess, run, postprocess).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.serve_pipeline import MAX_IMAGE_PIXELS, answer_one
from service.codecs.images import decode_image
from service.model_files import ModelFiles
from service.runners.ort import OrtRunner
from service.settings import Settings
from service.tasks.image_input import image_batch

MIN_CALLS = 5


@dataclass(frozen=True)
class OfflineFigures:
    max_batch_size: int
    ceiling_per_s: float  # images per second on full batches
    model_ms: float  # median runner call at batch 1
    pipeline_ms: float  # median decode + preprocess + run + postprocess at batch 1


def _call_times_s(call: Callable[[], object], seconds: float) -> list[float]:
    """Durations of repeated calls (after an untimed one): at least MIN_CALLS, for `seconds`."""
    call()
    times: list[float] = []
    stop = time.perf_counter() + seconds
    while len(times) < MIN_CALLS or time.perf_counter() < stop:
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def measure_offline(files: ModelFiles, settings: Settings, png: bytes, seconds: float) -> OfflineFigures:
    """The three yardsticks of `files`' model on the image `png`, each timed for `seconds`."""
    manifest = files.manifest
    batch = manifest.max_batch_size
    runner = OrtRunner(files, settings, batch)
    try:
        images = [decode_image(png, MAX_IMAGE_PIXELS)]
        full = image_batch(images * batch, manifest)
        single = image_batch(images, manifest)
        full_times = _call_times_s(lambda: runner.run(full), seconds)
        model_times = _call_times_s(lambda: runner.run(single), seconds)
        pipeline_times = _call_times_s(lambda: answer_one(runner, manifest, png), seconds)
    finally:
        runner.close()
    return OfflineFigures(
        max_batch_size=batch,
        ceiling_per_s=batch * len(full_times) / sum(full_times),
        model_ms=statistics.median(model_times) * 1000,
        pipeline_ms=statistics.median(pipeline_times) * 1000,
    )
