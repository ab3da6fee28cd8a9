"""Measuring a model's peak working memory at several input sizes, for the manifest's memory model.

Each model is measured in a fresh Python process (`python -m easerve.export.memory_profile`, no
torch imported) that loads the graph with the service's session options, takes its RSS once the
session is loaded as the baseline (resetting the peak there: /proc/self/clear_refs and VmHWM on
Linux, else `getrusage().ru_maxrss`), then runs one item (batch 1) at each size in increasing
order and reads the peak after each run: its growth over the baseline is that size's working
memory (input tensor included). Sizes run in one process, so what the
arena keeps from a smaller run is counted too, as in a server that has run other sizes before.
The sizes span the model's own size to the serving defaults' largest (`--max-model-pixels`
1024 x 1024, `--max-model-points` 8192); a model whose input has one size is measured once.
`artifacts.memory_model.fit_memory_model` fits the curve.
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from easerve.artifacts.manifest import Preprocessing, TensorInfo
from easerve.artifacts.memory_model import MemoryModel, PositionKind, fit_memory_model
from easerve.artifacts.shapes import concrete_shape, position_kind

# The largest sizes the service takes through v2 by default.
MAX_SIDE = 1024
MAX_POINTS = 8192
IMAGE_SIDES = (256, 512, 768, MAX_SIDE)
POINT_COUNTS = (1024, 2048, 4096, MAX_POINTS)
TIMEOUT_S = 600.0


class MemoryProfileError(RuntimeError):
    """The measuring process failed (out of memory, a graph that does not run at a size)."""


@dataclass(frozen=True)
class Probe:
    """One size to measure: n positions, and the inputs (name -> shape, dtype) of one item."""

    positions: int
    inputs: dict[str, tuple[list[int], str]]


def _scaled(side: int, scale: float, multiple: int) -> int:
    return max(multiple, math.floor(side * scale / multiple) * multiple)


def probes(inputs: Sequence[TensorInfo], preprocessing: Preprocessing) -> tuple[PositionKind, list[Probe]]:
    """What n counts for the model, and the sizes to measure, smallest first."""
    kind = position_kind(inputs)
    if kind == "pixels":
        height, width = preprocessing.image_size or (MAX_SIDE // 4, MAX_SIDE // 4)
        multiple = preprocessing.input_multiple or 1
        sizes = {(height, width)}
        for side in IMAGE_SIDES:
            scale = side / max(height, width)
            if scale > 1:
                sizes.add((_scaled(height, scale, multiple), _scaled(width, scale, multiple)))
        variants = [preprocessing.model_copy(update={"image_size": size}) for size in sorted(sizes)]
    elif kind == "points":
        own = preprocessing.num_points or POINT_COUNTS[0]
        counts = sorted({own, *(count for count in POINT_COUNTS if count > own)})
        variants = [preprocessing.model_copy(update={"num_points": count}) for count in counts]
    else:
        variants = [preprocessing]
    found = []
    for variant in variants:
        shapes = {tensor.name: list(concrete_shape(tensor, variant, 1)) for tensor in inputs}
        positions = {"pixels": math.prod(variant.image_size or (1,)), "points": variant.num_points or 1}.get(kind, 1)
        found.append(Probe(positions, {t.name: (shapes[t.name], t.dtype) for t in inputs}))
    return kind, sorted(found, key=lambda probe: probe.positions)


def measure_memory(
    onnx_paths: Sequence[Path], inputs: Sequence[TensorInfo], preprocessing: Preprocessing
) -> MemoryModel:
    """The fitted memory model of the graphs at `onnx_paths` (a model's FP32 graph and its
    reduced-precision variants; each measured in a fresh process): one model for all of them,
    fitted to the larger peak at each size, so that whichever variant is served is charged
    enough."""
    kind, planned = probes(inputs, preprocessing)
    peaks = [max(sizes) for sizes in zip(*(_measured_peaks(Path(path), planned) for path in onnx_paths), strict=True)]
    names = ", ".join(Path(path).name for path in onnx_paths)
    how = (
        f"peak RSS over the loaded session, one item per size in one fresh process per graph, sizes in increasing "
        f"order, onnxruntime CPU, the larger peak of the graphs at each size ({names})"
    )
    return fit_memory_model(kind, [p.positions for p in planned], peaks, how)


def _measured_peaks(onnx_path: Path, planned: Sequence[Probe]) -> list[int]:
    """Peak bytes of one item at each of the `planned` sizes, measured in a fresh process."""
    request = json.dumps([{"positions": p.positions, "inputs": p.inputs} for p in planned])
    try:
        done = subprocess.run(
            [sys.executable, "-m", __name__, str(onnx_path)],
            input=request,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise MemoryProfileError(f"{onnx_path}: measuring took over {TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        raise MemoryProfileError(f"{onnx_path}: the measuring process exited {done.returncode}: {done.stderr[-2000:]}")
    measured = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    if [entry["positions"] for entry in measured] != [p.positions for p in planned]:
        raise MemoryProfileError(f"{onnx_path}: the measuring process did not measure every size")
    return [entry["bytes"] for entry in measured]


def _status_kilobytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def _peak_reader() -> Callable[[], int]:
    """A reader of this process's peak RSS in bytes from now on. On Linux the high-water mark is
    reset to the current RSS first (/proc/self/clear_refs): `getrusage().ru_maxrss` keeps the peak
    of the process that spawned this one (it survives fork and exec), so it would hide any growth
    below the exporter's own size. On macOS (a fresh process's own peak there), `ru_maxrss` as it
    is; on a Linux that refuses the reset, MemoryProfileError rather than a model of zeros."""
    if sys.platform == "darwin":
        return lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        _status_kilobytes("VmHWM")
    except OSError as error:
        raise MemoryProfileError(f"cannot reset this process's peak memory to measure from: {error}") from None
    return lambda: _status_kilobytes("VmHWM") * 1024


def _probe_main(onnx_path: str) -> None:
    """The measuring process: probes (JSON) on stdin, one line {positions, bytes} per probe out."""
    import numpy as np
    import onnxruntime as ort

    from easerve.artifacts.ort_session import session_options

    planned = json.loads(sys.stdin.read())
    session = ort.InferenceSession(onnx_path, sess_options=session_options(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    peak_rss = _peak_reader()
    baseline = peak_rss()
    for probe in planned:
        feeds = {}
        for name, (shape, dtype) in probe["inputs"].items():
            array_type = np.dtype(dtype)
            values = rng.standard_normal(shape) if array_type.kind == "f" else np.zeros(shape)
            feeds[name] = values.astype(array_type)
        session.run(None, feeds)
        del feeds
        print(json.dumps({"positions": probe["positions"], "bytes": peak_rss() - baseline}), flush=True)


if __name__ == "__main__":
    _probe_main(sys.argv[1])
