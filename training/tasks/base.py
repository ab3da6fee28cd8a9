"""What every task plugs into the one training loop: the `Task` base and its optimiser `Phase`.

A task turns a data-loader batch into model inputs, names its optimisation phases (one for most
tasks; discriminator then generator for the GAN) and evaluates a model on a held-out loader. The
base is single-phase cross-entropy on images; each task family's module overrides what differs
and names the spec (`artifacts.tasks`) it trains.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from easerve.artifacts.tasks import TaskSpec
from easerve.model_defs.registry import ModelEntry
from easerve.training import metrics

IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)

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
    # The task this class trains (its key in `TASK_TYPES`); every registered subclass sets it.
    spec: ClassVar[TaskSpec]
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
