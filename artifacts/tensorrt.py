"""Native TensorRT engines from the exported ONNX, built on the GPU that will run them and cached
by content: the one builder and the one cache layout of `easerve export --format trt` and of
`easerve serve --backend tensorrt`, so an engine either builds is found and used by the other.

UNVERIFIED on hardware: this project's machines have no TensorRT; only the cache key, the
profile and the "not installed" path are tested. Follows the TensorRT 10 and 11 Python APIs
(see docs/export.md#tensorrt--unverified).

- Precision lives in the ONNX file, not in builder flags: FP16 engines are built from
  `model.fp16.onnx` (attention normalisation kept FP32, see `export.fp16`) as a strongly typed
  network. TensorRT 11 removed the FP16/INT8 builder flags and is always strongly typed;
  TensorRT 10 is asked for a strongly typed network explicitly, so a weakly typed FP16 build can
  never move the EA softmax to FP16.
- Optimisation profile: batch from 1 to the manifest's max batch (opt = max, where a loaded
  batcher runs), other dims at the manifest's preprocessing sizes.
- Cache: `<cache root>/tensorrt/<key>.plan`, the key a hash of the ONNX file's sha256, the
  TensorRT version, the GPU's compute capability, the precision and the profile; never a path.
  One timing cache per TensorRT version and GPU makes rebuilds of other models faster. The cache
  root is the service's `engine_cache_dir` setting (`$EASERVE_ENGINE_CACHE_DIR`), whose default
  is `default_cache_root()`.

Torch-free, so the service can import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

from easerve.artifacts.manifest import Manifest, sha256_file
from easerve.artifacts.shapes import concrete_shape

Precision = Literal["fp32", "fp16"]
MIN_MAJOR_VERSION = 10
WORKSPACE_BYTES = 2 << 30
CACHE_ENV = "EASERVE_ENGINE_CACHE_DIR"
ENGINE_FOLDER = "tensorrt"
# FP16 arithmetic needs compute capability 5.3 or newer.
FP16_MIN_CAPABILITY = (5, 3)


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or a GPU) is missing here; the message says what and where engines are built."""


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX file or build the engine."""


def import_tensorrt() -> ModuleType:
    """The `tensorrt` module, version 10 or newer; TensorRTUnavailable otherwise."""
    try:
        import tensorrt
    except ImportError as error:
        raise TensorRTUnavailable(
            f"TensorRT is not installed here ({error}); engines are built on the NVIDIA GPU "
            "machine that runs them: pip install 'easerve[gpu]' there and run "
            "`easerve export MODEL --format trt`"
        ) from error
    if _major(tensorrt.__version__) < MIN_MAJOR_VERSION:
        raise TensorRTUnavailable(f"TensorRT {tensorrt.__version__} is too old; {MIN_MAJOR_VERSION} or newer is needed")
    return tensorrt


def tensorrt_unavailable_reason() -> str | None:
    """Why engines cannot be built here, or None when TensorRT can be imported."""
    try:
        import_tensorrt()
    except TensorRTUnavailable as error:
        return str(error)
    return None


def _major(version: str) -> int:
    return int(version.split(".")[0])


@dataclass(frozen=True)
class ShapeRange:
    """An optimisation-profile entry: smallest, tuned-for and largest shape of one input."""

    minimum: tuple[int, ...]
    optimum: tuple[int, ...]
    maximum: tuple[int, ...]


def engine_profile(manifest: Manifest) -> dict[str, ShapeRange]:
    """Batch 1 to the manifest's max batch (optimised for it; a service that caps the batch
    lower still fits); spatial / point dims as preprocessed."""
    largest = manifest.max_batch_size
    return {
        t.name: ShapeRange(
            concrete_shape(t, manifest.preprocessing, 1),
            concrete_shape(t, manifest.preprocessing, largest),
            concrete_shape(t, manifest.preprocessing, largest),
        )
        for t in manifest.inputs
    }


@dataclass(frozen=True)
class EngineKey:
    """Everything that makes two engines differ, and nothing else (no paths, no names)."""

    onnx_sha256: str
    tensorrt_version: str
    compute_capability: str
    precision: Precision
    profile: tuple[tuple[str, ShapeRange], ...]

    def digest(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def engine_key(
    onnx_path: Path,
    tensorrt_version: str,
    compute_capability: str,
    precision: Precision,
    profile: dict[str, ShapeRange],
) -> EngineKey:
    """The cache key of the engine built from the file at `onnx_path` (by its content)."""
    return EngineKey(
        sha256_file(onnx_path), tensorrt_version, compute_capability, precision, tuple(sorted(profile.items()))
    )


def gpu_compute_capability(device: int = 0) -> str:
    """ "major.minor" of GPU `device`, from nvidia-smi; TensorRTUnavailable without a GPU."""
    try:
        result = subprocess.run(
            ["nvidia-smi", f"--id={device}", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise TensorRTUnavailable(f"no NVIDIA GPU found (nvidia-smi: {error})") from error
    return result.stdout.strip().splitlines()[0].strip()


def default_cache_root() -> Path:
    """$EASERVE_ENGINE_CACHE_DIR, else ~/.cache/easerve/engines (outside the repository)."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "easerve" / "engines"


def engine_path(cache_root: Path, key: EngineKey) -> Path:
    """Where the engine of `key` is cached under `cache_root`."""
    return cache_root / ENGINE_FOLDER / f"{key.digest()}.plan"


def _fp16_supported(capability: str) -> bool:
    major, minor = (int(part) for part in capability.split("."))
    return (major, minor) >= FP16_MIN_CAPABILITY


def _strongly_typed_network(trt: ModuleType, builder: object) -> object:
    if _major(trt.__version__) >= 11:
        return builder.create_network(0)  # always strongly typed
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))


def build_engine(
    onnx_files: dict[Precision, Path],
    manifest: Manifest,
    precision: Precision,
    cache_root: Path,
    log: Callable[[str], None] = print,
) -> Path:
    """The cached engine for `manifest`'s model at `precision`, built if not cached yet.

    `onnx_files` maps each precision to its ONNX file (fp32: model.onnx, fp16: model.fp16.onnx).
    FP16 falls back to FP32 on a GPU without fast FP16. Returns the engine's path.
    """
    trt = import_tensorrt()
    capability = gpu_compute_capability()
    if precision == "fp16" and not _fp16_supported(capability):
        log(f"compute capability {capability} has no fast FP16; building FP32")
        precision = "fp32"
    onnx_path = onnx_files[precision]
    profile = engine_profile(manifest)
    key = engine_key(onnx_path, trt.__version__, capability, precision, profile)
    engine = engine_path(cache_root, key)
    cache_dir = engine.parent
    cache_dir.mkdir(parents=True, exist_ok=True)
    if engine.is_file():
        log(f"engine cached: {engine}")
        return engine
    timing_cache = cache_dir / f"timing-trt{trt.__version__}-sm{capability}.cache"
    log(f"building a TensorRT {trt.__version__} {precision} engine (minutes, once per GPU)")
    serialized, timing = _build(trt, onnx_path, profile, timing_cache)
    partial = engine.with_suffix(".partial")
    partial.write_bytes(serialized)
    partial.replace(engine)
    timing_cache.write_bytes(timing)
    (cache_dir / f"{key.digest()}.json").write_text(
        json.dumps({"model": manifest.name, **asdict(key)}, indent=2) + "\n"
    )
    return engine


def _build(trt: ModuleType, onnx_path: Path, profile: dict[str, ShapeRange], timing_cache: Path) -> tuple[bytes, bytes]:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = _strongly_typed_network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    optimisation_profile = builder.create_optimization_profile()
    for name, shapes in profile.items():
        optimisation_profile.set_shape(name, shapes.minimum, shapes.optimum, shapes.maximum)
    config.add_optimization_profile(optimisation_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path.name}")
    return bytes(serialized), bytes(config.get_timing_cache().serialize())
