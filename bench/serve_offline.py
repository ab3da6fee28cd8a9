"""What a model costs without a server, the yardsticks of `easerve bench serve`:

- the ceiling: the throughput of as many runners as the service has model instances, each
  computing full batches (max batch size) on its own thread, images per second;
- the bare model: one runner call at batch 1;
- the bare pipeline: one request's whole work at batch 1 (decode, preprocess, run, postprocess).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from easerve.bench.serve_pipeline import answer_one, decode_for
from easerve.export.latency import Timing, time_calls
from easerve.service.model_files import ModelFiles
from easerve.service.runners.base import Tensors
from easerve.service.runners.ort import OrtRunner
from easerve.service.settings import Settings
from easerve.service.tasks.image_input import image_batch

MIN_CALLS = 5


@dataclass(frozen=True)
class OfflineFigures:
    max_batch_size: int
    ceiling_per_s: float  # images per second on full batches
    ceiling_cpu_ms: float  # CPU time (every thread of this process) per image on full batches
    model_ms: float  # median runner call at batch 1
    pipeline_ms: float  # median decode + preprocess + run + postprocess at batch 1


def _timed(call: Callable[[], object], seconds: float, warmup: int = 1) -> Timing:
    """Repeated calls (after `warmup` untimed ones): at least MIN_CALLS, for `seconds`."""
    return time_calls(call, warmup=warmup, min_repeats=MIN_CALLS, budget_s=seconds)


def _ceiling(runners: list[OrtRunner], full: Tensors, batch: int, seconds: float) -> tuple[float, float]:
    """(images per second, CPU ms per image) of `runners` side by side, each running the full
    batch `full` on its own thread for `seconds` (at least MIN_CALLS times), after one untimed
    call each. The CPU is this process's (the runners' threads; nothing else runs meanwhile)."""
    for runner in runners:
        runner.run(full)
    started, cpu_before = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=len(runners)) as pool:
        timings = pool.map(lambda runner: _timed(functools.partial(runner.run, full), seconds, warmup=0), runners)
        calls = sum(len(timing.seconds) for timing in timings)
    images = batch * calls
    return images / (time.perf_counter() - started), (time.process_time() - cpu_before) * 1000 / images


def measure_offline(
    files: ModelFiles, settings: Settings, png: bytes, seconds: float, instances: int = 1
) -> OfflineFigures:
    """The three yardsticks of `files`' model on the image `png`, each timed for `seconds`; the
    ceiling with `instances` runners side by side."""
    manifest = files.manifest
    batch = manifest.max_batch_size
    runners = [OrtRunner(files, settings, batch) for _ in range(instances)]
    try:
        images = [decode_for(manifest, png).image]
        full = image_batch(images * batch, manifest)
        single = image_batch(images, manifest)
        ceiling_per_s, ceiling_cpu_ms = _ceiling(runners, full, batch, seconds)
        model = _timed(lambda: runners[0].run(single), seconds)
        pipeline = _timed(lambda: answer_one(runners[0], manifest, png), seconds)
    finally:
        for runner in runners:
            runner.close()
    return OfflineFigures(
        max_batch_size=batch,
        ceiling_per_s=ceiling_per_s,
        ceiling_cpu_ms=ceiling_cpu_ms,
        model_ms=model.median * 1000,
        pipeline_ms=pipeline.median * 1000,
    )
