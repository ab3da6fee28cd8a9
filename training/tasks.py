"""What each task plugs into the one training loop: inputs, losses (per optimiser phase), metrics.

A task turns a data-loader batch into model inputs, names its optimisation phases (one for most
tasks; discriminator then generator for the GAN) and evaluates a model on a held-out loader.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from easerve.artifacts.tasks import (
    CLASSIFICATION,
    DETECTION,
    GENERATION,
    INSTANCE_SEGMENTATION,
    POINTCLOUD_CLASSIFICATION,
    POINTCLOUD_SEGMENTATION,
    SEGMENTATION,
)
from easerve.model_defs import detection, generation, instances
from easerve.model_defs.registry import ModelEntry
from easerve.training import augment, metrics

IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
DEFAULT_JUDGE = Path("weights/eamlp-ea-tiny")
# TTUR (Heusel et al. 2017): the discriminator learns faster than the generator.
DISCRIMINATOR_LR_SCALE = 2.5
# The discriminator learns the classes from real images before the generator trains against it.
GENERATOR_FIRST_STEP = 300

Batch = Any
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


@dataclass
class Phase:
    """One optimiser and the loss it minimises; phases run in order on every batch.

    `loss` gets the model, or under torchrun its `training.distributed.TrainingView`: the same
    attributes, with the task's `entry_points` running through DistributedDataParallel."""

    name: str
    parameters: Callable[[nn.Module], Iterable[nn.Parameter]]
    loss: LossFn
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.05
    # This phase's learning rate as a multiple of the run's `--lr`.
    lr_scale: float = 1.0
    # The first (0-based) step this phase runs at; earlier steps skip it.
    first_step: int = 0


def _all_parameters(model: nn.Module) -> Iterable[nn.Parameter]:
    return model.parameters()


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB -> the normalised range every image model is trained on."""
    mean = torch.tensor(IMAGE_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


@dataclass
class Task:
    """Base: single phase, cross-entropy on `model(inputs)`; subclasses override what differs."""

    entry: ModelEntry
    class_names: list[str]
    options: dict[str, Any] = field(default_factory=dict)

    primary_metric: str = "accuracy"
    # The model attributes the losses call (`forward`, another method, or a sub-module). Under
    # torchrun each gets its own DDP wrapper, which averages the gradients that reach the
    # parameters through it: a loss must reach every trained parameter through one of these.
    entry_points: ClassVar[tuple[str, ...]] = ("forward",)

    def phases(self) -> list[Phase]:
        return [Phase("model", _all_parameters, self.loss)]

    def graph_inputs(self, inputs: torch.Tensor, targets: Any, latent: torch.Generator) -> tuple[torch.Tensor, ...]:
        """The exported graph's inputs for a held-out batch, prepared as the trainer prepares them
        (`latent`: the seeded source of any noise the graph takes)."""
        return (self.prepare(inputs),)

    def graph_model(self, graph: Callable[..., Any]) -> Any:
        """An exported graph, shaped the way `evaluate` reads the model it trained."""
        return graph

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        inputs, targets = batch
        return F.cross_entropy(model(self.prepare(inputs)), targets)

    def prepare(self, inputs: torch.Tensor) -> torch.Tensor:
        return normalize_images(inputs)

    def preprocessing(self, sample_input: torch.Tensor) -> dict[str, Any]:
        """How a raw input becomes the model input: recorded in the checkpoint, used by export."""
        height, width = sample_input.shape[-2:]
        return {"kind": "image", "image_size": [height, width], "mean": list(IMAGE_MEAN), "std": list(IMAGE_STD)}

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        predictions, labels = [], []
        for inputs, targets in loader:
            predictions.append(model(self.prepare(inputs)).argmax(-1).numpy())
            labels.append(targets.numpy())
        return {"accuracy": metrics.top1_accuracy(np.concatenate(predictions), np.concatenate(labels))}


class ClassificationTask(Task):
    pass


@dataclass
class SegmentationTask(Task):
    primary_metric: str = "miou"

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        images, masks = batch
        return F.cross_entropy(model(self.prepare(images)), masks, ignore_index=metrics.IGNORE_INDEX)

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        confusion = metrics.ConfusionMatrix(len(self.class_names))
        for images, masks in loader:
            confusion.update(model(self.prepare(images)).argmax(1).numpy(), masks.numpy())
        return {"miou": confusion.mean_iou(), "pixel_accuracy": confusion.pixel_accuracy()}


@dataclass
class DetectionTask(Task):
    primary_metric: str = "map50"
    entry_points = ("forward_raw",)
    # Detections scoring less are left out of the evaluation (they only lengthen its lists).
    score_floor: ClassVar[float] = 0.01

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        images, targets = batch
        raw = model.forward_raw(self.prepare(images))
        return self.detection_loss(model, raw, targets)

    def detection_loss(self, model: nn.Module, raw: dict[str, torch.Tensor], targets: list[dict]) -> torch.Tensor:
        heatmap_size = tuple(raw["heatmap"].shape[-2:])
        per_image = [
            detection.centernet_targets(
                t["boxes"].cpu(), t["labels"].cpu(), heatmap_size, model.config.num_classes, detection.OUTPUT_STRIDE
            )
            for t in targets
        ]
        device = raw["heatmap"].device
        stacked = {k: torch.stack([t[k] for t in per_image]).to(device) for k in per_image[0]}
        return detection.centernet_loss(raw, stacked, model.config.size_loss_weight, model.config.offset_loss_weight)[
            "loss"
        ]

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        found = metrics.Detections([], [], [])
        truth_boxes, truth_labels = [], []
        for images, targets in loader:
            boxes, scores, labels = model(self.prepare(images))
            for i, target in enumerate(targets):
                keep = scores[i] > self.score_floor
                found.boxes.append(boxes[i][keep].numpy())
                found.scores.append(scores[i][keep].numpy())
                found.labels.append(labels[i][keep].numpy())
                truth_boxes.append(target["boxes"].numpy())
                truth_labels.append(target["labels"].numpy())
        score = metrics.mean_average_precision_50(found, truth_boxes, truth_labels, len(self.class_names))
        return {"map50": score}


@dataclass
class InstanceSegmentationTask(DetectionTask):
    """The detector's loss plus the masks' (`instances.mask_loss`); judged by COCO mask AP."""

    primary_metric: str = "mask_ap"
    score_floor: ClassVar[float] = 0.05

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        images, targets = batch
        raw = model.forward_raw(self.prepare(images))
        objects = instances.instance_targets(
            [{k: v.to(images.device) for k, v in t.items()} for t in targets], tuple(raw["heatmap"].shape[-2:])
        )
        masks = instances.mask_loss(raw, objects)
        return self.detection_loss(model, raw, targets) + model.config.mask_loss_weight * masks

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        found = metrics.InstanceMasks([], [], [])
        truth_masks, truth_labels = [], []
        for images, targets in loader:
            _, scores, labels, masks = model(self.prepare(images))
            masks = masks >= 0.5
            for i, target in enumerate(targets):
                keep = scores[i] > self.score_floor
                found.masks.append(masks[i][keep].numpy())
                found.labels.append(labels[i][keep].numpy())
                found.scores.append(scores[i][keep].numpy())
                truth_masks.append(target["masks"].numpy().astype(bool))
                truth_labels.append(target["labels"].numpy())
        return metrics.mask_average_precision(found, truth_masks, truth_labels, len(self.class_names))


@dataclass(frozen=True)
class LatentConfig:
    z_dim: int


class GeneratorGraph:
    """An exported generator, shaped the way `GenerationTask.evaluate` reads a ConditionalGAN
    (`model.generator(z, labels)`, `model.config.z_dim`)."""

    def __init__(self, graph: Callable[..., Any], z_dim: int) -> None:
        self.generator = graph
        self.config = LatentConfig(z_dim)


@dataclass
class GenerationTask(Task):
    """(K + 1)-class conditional GAN; judged by a trained shapes classifier (see `evaluate`)."""

    primary_metric: str = "class_accuracy"
    # A DDP wrapper each rather than one for the whole GAN: the discriminator phase gives the
    # generator no gradient, which one wrapper would have to search for (find_unused_parameters).
    entry_points = ("generator", "discriminator")

    def phases(self) -> list[Phase]:
        gan_betas = (0.5, 0.999)
        return [
            Phase(
                "discriminator",
                lambda m: m.discriminator.parameters(),
                self.discriminator_loss,
                gan_betas,
                0.0,
                lr_scale=DISCRIMINATOR_LR_SCALE,
            ),
            Phase(
                "generator",
                lambda m: m.generator.parameters(),
                self.generator_loss,
                gan_betas,
                0.0,
                first_step=GENERATOR_FIRST_STEP,
            ),
        ]

    def _fake(self, model: nn.Module, labels: torch.Tensor) -> torch.Tensor:
        z = torch.randn(labels.shape[0], model.config.z_dim, device=labels.device)
        return model.generator(z, labels)

    def _discriminate(self, model: nn.Module, images: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Logits of the real `images` ([0, 1], as loaded) then of `fake` (the generator's
        [-1, 1]), augmented alike, in one batch: the discriminator's BatchNorm sees the same mix
        in both phases."""
        real = images * 2 - 1
        return model.discriminator(augment.translate(augment.recolour(torch.cat([real, fake]))))

    def discriminator_loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        images, labels = batch
        with torch.no_grad():
            fake = self._fake(model, labels)
        logits = self._discriminate(model, images, fake)
        return generation.discriminator_loss(logits[: len(labels)], labels, logits[len(labels) :])

    def generator_loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        images, labels = batch
        logits = self._discriminate(model, images, self._fake(model, labels))
        return generation.generator_loss(logits[len(images) :], labels)

    def graph_inputs(self, inputs: torch.Tensor, targets: Any, latent: torch.Generator) -> tuple[torch.Tensor, ...]:
        """Seeded normal z and the data set's labels."""
        return torch.randn(targets.shape[0], self.entry.config.z_dim, generator=latent), targets

    def graph_model(self, graph: Callable[..., Any]) -> Any:
        return GeneratorGraph(graph, self.entry.config.z_dim)

    def preprocessing(self, sample_input: torch.Tensor) -> dict[str, Any]:
        return {"kind": "latent", "z_dim": self.entry.config.z_dim, "image_size": list(sample_input.shape[-2:])}

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """Class accuracy of generated images under our trained shapes classifier (the judge),
        and the Fréchet distance between generated and real test images in its feature space."""
        from easerve.training.checkpoint import load_checkpoint

        judge_dir = Path(self.options.get("judge") or DEFAULT_JUDGE)
        if not (judge_dir / "checkpoint.json").is_file():
            return {}
        judge, judge_info = load_checkpoint(judge_dir)
        judge_size = judge_info.preprocessing["image_size"]
        generator = torch.Generator().manual_seed(1234)
        correct, total, real_features, fake_features = 0, 0, [], []
        for images, labels in loader:
            z = torch.randn(labels.shape[0], model.config.z_dim, generator=generator)
            fake = (model.generator(z, labels) + 1) / 2
            for batch_images, sink in ((fake, fake_features), (images, real_features)):
                resized = F.interpolate(batch_images.clamp(0, 1), size=judge_size, mode="bilinear", align_corners=False)
                features = judge.forward_features(normalize_images(resized))
                sink.append(features.numpy())
                if batch_images is fake:
                    correct += int((judge.forward_head(features).argmax(-1) == labels).sum())
                    total += labels.shape[0]
        return {
            "class_accuracy": correct / total,
            "frechet_distance": metrics.frechet_distance(np.concatenate(real_features), np.concatenate(fake_features)),
        }


@dataclass
class PointCloudClassificationTask(Task):
    def prepare(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs

    def preprocessing(self, sample_input: torch.Tensor) -> dict[str, Any]:
        return {"kind": "points", "num_points": int(sample_input.shape[-2])}


@dataclass
class PointCloudSegmentationTask(PointCloudClassificationTask):
    primary_metric: str = "part_miou"

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        points, parts = batch
        return F.cross_entropy(model(points).flatten(0, 1), parts.flatten())

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        predictions, parts = [], []
        for points, labels in loader:
            predictions.append(model(points).argmax(-1).numpy())
            parts.append(labels.numpy())
        predicted, truth = np.concatenate(predictions), np.concatenate(parts)
        return {
            "part_miou": metrics.shape_part_miou(predicted, truth),
            "point_accuracy": metrics.top1_accuracy(predicted, truth),
        }


TASK_TYPES: dict[str, type[Task]] = {
    CLASSIFICATION.name: ClassificationTask,
    SEGMENTATION.name: SegmentationTask,
    DETECTION.name: DetectionTask,
    GENERATION.name: GenerationTask,
    POINTCLOUD_CLASSIFICATION.name: PointCloudClassificationTask,
    POINTCLOUD_SEGMENTATION.name: PointCloudSegmentationTask,
    INSTANCE_SEGMENTATION.name: InstanceSegmentationTask,
}


def task_for(entry: ModelEntry, class_names: list[str], options: dict[str, Any]) -> Task:
    return TASK_TYPES[entry.task](entry, class_names, options)
