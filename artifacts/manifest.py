"""`weights/<model>/manifest.json`: everything the service needs to serve a model without its code."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from easerve.artifacts.accuracy_gate import DEFAULT_MAX_DROP_POINTS, drop_in_points
from easerve.artifacts.memory_model import MemoryModel
from easerve.artifacts.tasks import TaskName, TaskSpec, task_spec

MANIFEST_FILE = "manifest.json"
SCHEMA_VERSION = 1

AttentionKind = Literal["ea", "sa"]
DType = Literal["float32", "float16", "int64", "int32", "uint8", "bool"]
# The graphs export can write for one model: the FP32 graph and its reduced-precision variants.
VariantName = Literal["fp32", "fp16", "int8"]
_VARIANT_OF_KIND: dict[str, VariantName] = {"int8-static": "int8", "fp16": "fp16"}


class TensorInfo(BaseModel):
    """A graph input or output; string dims are symbolic ("batch", "height", "width", "points")."""

    name: str
    dtype: DType
    shape: list[int | str]


class Preprocessing(BaseModel):
    """How raw client input becomes the model's input tensor (and how outputs map back)."""

    kind: Literal["image", "points", "latent"]
    # image: the size the network sees (H, W); inputs are resized to it and outputs mapped back.
    image_size: tuple[int, int] | None = None
    # image: H and W of a tensor fed to the model directly (v2) must be positive multiples of
    # this (the backbone's downsampling); None: any positive size.
    input_multiple: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    # points: the number of points the model was trained on; clouds are centred and scaled
    # to the unit sphere, then resampled to this count.
    num_points: int | None = None
    # latent (generation): the noise vector length.
    z_dim: int | None = None


class FileInfo(BaseModel):
    path: str  # relative to the model folder
    sha256: str
    bytes: int


class Parity(BaseModel):
    """PyTorch vs exported graph on held-out generated data."""

    samples: int
    max_abs_error: float
    task_agreement: float = Field(description="fraction of samples/pixels/points/boxes that agree")
    metric: str
    dataset: str = Field(default="", description="the held-out split the figures were measured on")
    per_output_max_abs_error: dict[str, float] = {}
    # Random inputs at shapes other than the export example's (other batch, height/width, points):
    # the dynamic axes compute the same as PyTorch too.
    random_inputs_max_abs_error: float | None = None
    random_input_shapes: dict[str, list[int]] = {}


class Quantization(BaseModel):
    kind: Literal["int8-static", "fp16"]
    file: FileInfo
    metric_name: str
    metric_fp32: float
    metric_quantized: float
    speedup_batch8: float | None = None
    # The CPU the speed-up was measured on (its vector extensions decide INT8's speed).
    measured_on: str | None = None
    # The accuracy gate it passed: at most this many points below the FP32 graph's metric.
    max_drop_points: float = DEFAULT_MAX_DROP_POINTS
    # FP16: the nodes left in FP32 (the attention normalisation).
    fp32_nodes: list[str] = []


class Variant(BaseModel):
    """One graph of the model the service can serve, with its accuracy against the FP32 graph."""

    name: VariantName
    file: FileInfo
    metric_name: str | None = None
    metric: float | None = None
    metric_fp32: float | None = None
    max_drop_points: float | None = None
    speedup_batch8: float | None = None
    measured_on: str | None = None

    @property
    def within_gate(self) -> bool:
        """The FP32 graph, or a variant whose recorded metric is within its accuracy gate."""
        if self.name == "fp32":
            return True
        if self.metric is None or self.metric_fp32 is None or self.max_drop_points is None:
            return False
        return drop_in_points(self.metric_fp32, self.metric) <= self.max_drop_points


class Manifest(BaseModel):
    schema_version: int = SCHEMA_VERSION
    name: str
    task: TaskName
    attention: AttentionKind
    arch: str
    description: str = ""
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    preprocessing: Preprocessing
    labels: list[str]
    max_batch_size: int
    onnx: FileInfo
    opset: int
    quantized: list[Quantization] = []
    parity: Parity | None = None
    source_checkpoint: FileInfo | None = None
    metrics: dict[str, float] = {}
    exporter_versions: dict[str, str] = {}
    # Peak working memory of one item by its size, measured at export; None in manifests written
    # before it was measured (the service then charges decoding only).
    memory: MemoryModel | None = None

    @property
    def spec(self) -> TaskSpec:
        return task_spec(self.task)

    def variants(self) -> list[Variant]:
        """Every graph export wrote: FP32 first, then the reduced-precision ones it kept."""
        fp32 = Variant(name="fp32", file=self.onnx)
        return [fp32] + [
            Variant(
                name=_VARIANT_OF_KIND[entry.kind],
                file=entry.file,
                metric_name=entry.metric_name,
                metric=entry.metric_quantized,
                metric_fp32=entry.metric_fp32,
                max_drop_points=entry.max_drop_points,
                speedup_batch8=entry.speedup_batch8,
                measured_on=entry.measured_on,
            )
            for entry in self.quantized
        ]

    def variant(self, name: VariantName) -> Variant | None:
        return next((variant for variant in self.variants() if variant.name == name), None)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_file(model_dir: Path, relative: str) -> FileInfo:
    """FileInfo (hash and size) for a file inside a model folder."""
    path = model_dir / relative
    return FileInfo(path=relative, sha256=sha256_file(path), bytes=path.stat().st_size)


def load_manifest(model_dir: Path) -> Manifest:
    """Read and validate `<model_dir>/manifest.json`."""
    return Manifest.model_validate_json((model_dir / MANIFEST_FILE).read_text())


def save_manifest(model_dir: Path, manifest: Manifest) -> Path:
    path = model_dir / MANIFEST_FILE
    path.write_text(manifest.model_dump_json(indent=2) + "\n")
    return path


def discover_manifests(weights_dir: Path) -> list[Path]:
    """Model folders under `weights_dir` that hold a manifest, sorted by name."""
    return sorted(p.parent for p in weights_dir.glob(f"*/{MANIFEST_FILE}"))
