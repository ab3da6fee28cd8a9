"""Class-conditional generation: a (K + 1)-class conditional GAN trained in two phases
(discriminator, then generator); judged by a trained shapes classifier (see `evaluate`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from easerve.artifacts.tasks import GENERATION
from easerve.model_defs import generation
from easerve.training import augment, metrics
from easerve.training.tasks.base import Batch, Phase, Task, normalize_images

DEFAULT_JUDGE = Path("weights/eamlp-ea-tiny")
# TTUR (Heusel et al. 2017): the discriminator learns faster than the generator.
DISCRIMINATOR_LR_SCALE = 2.5
# The discriminator learns the classes from real images before the generator trains against it.
GENERATOR_FIRST_STEP = 300


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
    spec = GENERATION
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
