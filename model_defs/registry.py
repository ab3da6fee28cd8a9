"""The model registry: the only place model names live.

A name is `<arch>-<attention>-<size>`; every (arch, size) is registered twice, once with External
Attention and once with self-attention, from the same config, so "EA vs SA" is one flag.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from easerve.artifacts.tasks import (
    CLASSIFICATION,
    DETECTION,
    GENERATION,
    INSTANCE_SEGMENTATION,
    POINTCLOUD_CLASSIFICATION,
    POINTCLOUD_SEGMENTATION,
    SEGMENTATION,
    TaskName,
    TaskSpec,
    task_spec,
)
from easerve.model_defs.attention import ATTENTION_KINDS, AttentionKind
from easerve.model_defs.classification import EAMLP, EAMLPConfig
from easerve.model_defs.detection import CenterNetConfig, EADetector
from easerve.model_defs.generation import ConditionalGAN, SAGANConfig
from easerve.model_defs.instances import EAInstanceSegmenter, InstanceConfig
from easerve.model_defs.labels import PRIMITIVE_CLASSES, PRIMITIVE_PARTS, SEGMENTATION_CLASSES, SHAPE_CLASSES
from easerve.model_defs.pointcloud import PCTClassifier, PCTConfig, PCTPartSegmenter
from easerve.model_defs.segmentation import EANet, EANetConfig


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output. String dims are symbolic ("batch", "height", "points")."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    # For integer inputs (class labels): values are drawn from [0, high).
    high: int | None = None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    arch: str
    attention: AttentionKind
    size: str
    task: TaskName
    build: Callable[[Any], nn.Module]
    config: Any
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # Concrete values of the symbolic dims for examples, training and export.
    example_dims: dict[str, int]
    bundled: bool
    description: str

    @property
    def spec(self) -> TaskSpec:
        return task_spec(self.task)

    def create(self, **overrides: Any) -> nn.Module:
        """A freshly initialised model, with config fields optionally overridden."""
        return self.build(dataclasses.replace(self.config, **overrides))

    def concrete_shape(self, spec: TensorSpec, batch: int) -> tuple[int, ...]:
        dims = {"batch": batch, **self.example_dims}
        return tuple(dims[d] if isinstance(d, str) else d for d in spec.shape)

    def example_inputs(self, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """Random inputs of the declared shapes and dtypes (labels in range), deterministic by seed."""
        generator = torch.Generator().manual_seed(seed)
        tensors = []
        for spec in self.inputs:
            shape = self.concrete_shape(spec, batch)
            if spec.dtype == "int64":
                tensors.append(torch.randint(0, spec.high or 1, shape, generator=generator))
            else:
                tensors.append(torch.randn(shape, generator=generator))
        return tuple(tensors)


_REGISTRY: dict[str, ModelEntry] = {}


def _register_twins(
    arch: str,
    size: str,
    task: TaskName,
    build: Callable[[Any], nn.Module],
    config: Any,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    example_dims: dict[str, int],
    bundled: bool,
    description: str,
) -> None:
    for kind in ATTENTION_KINDS:
        name = f"{arch}-{kind}-{size}"
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(
            name=name,
            arch=arch,
            attention=kind,
            size=size,
            task=task,
            build=build,
            config=dataclasses.replace(config, attention=kind),
            inputs=inputs,
            outputs=outputs,
            example_dims=dict(example_dims),
            bundled=bundled,
            description=description,
        )


def _image(size: int | str) -> TensorSpec:
    height, width = (size, size) if isinstance(size, int) else ("height", "width")
    return TensorSpec("image", ("batch", 3, height, width))


def _register_classification() -> None:
    n = len(SHAPE_CLASSES)
    _register_twins(
        "eamlp",
        "tiny",
        CLASSIFICATION.name,
        EAMLP,
        EAMLPConfig(
            image_size=64, num_classes=n, embed_dim=128, depth=4, num_heads=4, mlp_ratio=2.0, token_dim=32, pool="max"
        ),
        (_image(64),),
        (TensorSpec("logits", ("batch", n)),),
        {},
        True,
        "EAMLP/T2T-ViT, 64x64 shapes, CPU size",
    )
    paper = {"7": (256, 7, 4, 2.0), "14": (384, 14, 6, 3.0), "19": (448, 19, 7, 3.0)}
    for size, (dim, depth, heads, ratio) in paper.items():
        _register_twins(
            "eamlp",
            size,
            CLASSIFICATION.name,
            EAMLP,
            EAMLPConfig(embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=ratio),
            (_image(224),),
            (TensorSpec("logits", ("batch", 1000)),),
            {},
            False,
            f"EAMLP-{size}, the paper's ImageNet config",
        )


def _register_segmentation() -> None:
    n = len(SEGMENTATION_CLASSES)
    dims = {"height": 128, "width": 128}
    _register_twins(
        "eanet",
        "tiny",
        SEGMENTATION.name,
        EANet,
        EANetConfig(num_classes=n),
        (_image("var"),),
        (TensorSpec("logits", ("batch", n, "height", "width")),),
        dims,
        True,
        "EANet head on a small dilated conv backbone (stride 8), shapes masks",
    )
    _register_twins(
        "eanet",
        "r101",
        SEGMENTATION.name,
        EANet,
        EANetConfig(num_classes=150, backbone="resnet101", head_in=2048, head_dim=512, mid_dim=256),
        (_image("var"),),
        (TensorSpec("logits", ("batch", 150, "height", "width")),),
        {"height": 512, "width": 512},
        False,
        "EANet, the paper's dilated ResNet-101 config (ADE20K classes)",
    )


def _register_detection() -> None:
    n = len(SHAPE_CLASSES)
    config = CenterNetConfig(num_classes=n)
    k = config.max_detections
    _register_twins(
        "eadet",
        "tiny",
        DETECTION.name,
        EADetector,
        config,
        (_image("var"),),
        (
            TensorSpec("boxes", ("batch", k, 4)),
            TensorSpec("scores", ("batch", k)),
            TensorSpec("labels", ("batch", k), "int64"),
        ),
        {"height": 128, "width": 128},
        True,
        "CenterNet-style anchor-free detector, attention on the last stage, top-K decode in graph",
    )


def _register_generation() -> None:
    n = len(SHAPE_CLASSES)
    config = SAGANConfig(num_classes=n)
    _register_twins(
        "eagan",
        "tiny",
        GENERATION.name,
        ConditionalGAN,
        config,
        (TensorSpec("z", ("batch", config.z_dim)), TensorSpec("label", ("batch",), "int64", high=n)),
        (TensorSpec("image", ("batch", 3, config.image_size, config.image_size)),),
        {},
        True,
        "SAGAN-style class-conditional generator (+ discriminator), attention at mid resolution",
    )


def _register_pointcloud() -> None:
    n = len(PRIMITIVE_CLASSES)
    points = TensorSpec("points", ("batch", "points", 3))
    dims = {"points": 512}
    _register_twins(
        "pct",
        "tiny",
        POINTCLOUD_CLASSIFICATION.name,
        PCTClassifier,
        PCTConfig(num_outputs=n),
        (points,),
        (TensorSpec("logits", ("batch", n)),),
        dims,
        True,
        "PCT-style point cloud classifier (EA or offset-attention)",
    )
    _register_twins(
        "pctpart",
        "tiny",
        POINTCLOUD_SEGMENTATION.name,
        PCTPartSegmenter,
        PCTConfig(num_outputs=len(PRIMITIVE_PARTS)),
        (points,),
        (TensorSpec("logits", ("batch", "points", len(PRIMITIVE_PARTS))),),
        dims,
        True,
        "PCT-style part segmenter (EA or offset-attention)",
    )


def _register_instance_segmentation() -> None:
    config = InstanceConfig(num_classes=len(SHAPE_CLASSES))
    k = config.max_detections
    _register_twins(
        "eainst",
        "tiny",
        INSTANCE_SEGMENTATION.name,
        EAInstanceSegmenter,
        config,
        (_image("var"),),
        (
            TensorSpec("boxes", ("batch", k, 4)),
            TensorSpec("scores", ("batch", k)),
            TensorSpec("labels", ("batch", k), "int64"),
            TensorSpec("masks", ("batch", k, "height", "width")),
        ),
        {"height": 96, "width": 96},
        True,
        "CenterNet-style detector with YOLACT-style masks (prototypes + per-instance coefficients and box prior)",
    )


for _register in (
    _register_classification,
    _register_segmentation,
    _register_detection,
    _register_generation,
    _register_pointcloud,
    _register_instance_segmentation,
):
    _register()


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for `name`; KeyError lists the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def list_models(
    task: TaskName | None = None, attention: AttentionKind | None = None, bundled: bool | None = None
) -> list[ModelEntry]:
    """Registered models, filtered, in registration order."""
    return [
        e
        for e in _REGISTRY.values()
        if (task is None or e.task == task)
        and (attention is None or e.attention == attention)
        and (bundled is None or e.bundled == bundled)
    ]


def twin_of(name: str) -> ModelEntry:
    """The same architecture and size with the other attention kind."""
    entry = get_model_entry(name)
    other = "sa" if entry.attention == "ea" else "ea"
    return get_model_entry(f"{entry.arch}-{other}-{entry.size}")
