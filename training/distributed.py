"""Data parallelism under `torchrun`: the process group, and the model as the losses see it.

Each model entry point a task's losses call (`Task.entry_points`: the model's `forward`, another
method, or a sub-module) runs through its own `DistributedDataParallel` wrapper. DDP broadcasts
rank 0's parameters and buffers when it wraps, averages the gradients over the processes in the
backward pass, and broadcasts rank 0's buffers again before the forward passes, so every process
holds the same weights after each optimiser step and BatchNorm running statistics (which only
evaluation uses, on rank 0) follow rank 0. BatchNorm normalises with each process's own share of
the batch (no SyncBatchNorm).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Distributed:
    """This process's place in the process group; rank 0 of 1 outside torchrun."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Distributed:
    """Join the torchrun process group (nccl for a CUDA `device`, gloo otherwise) when launched
    by torchrun (WORLD_SIZE > 1); a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Distributed(dist.get_rank(), world_size)


class _Method(nn.Module):
    """A model method other than `forward`, as the forward of a module DDP can wrap."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model
        self.method = name

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.model, self.method)(*args, **kwargs)


def _entry_module(model: nn.Module, name: str) -> nn.Module:
    """The module whose forward is `model.<name>`: the model itself for "forward", the
    sub-module of that name, or the model's method of that name."""
    if name == "forward":
        return model
    attribute = getattr(model, name)
    return attribute if isinstance(attribute, nn.Module) else _Method(model, name)


class TrainingView:
    """The model as the task's losses see it under torchrun: `view(...)` and `view.<entry
    point>(...)` run through that entry point's DDP wrapper; any other attribute (`config`, ...)
    is the model's own. It stands in for the model in `Phase.loss`."""

    def __init__(self, model: nn.Module, wrappers: dict[str, nn.Module]) -> None:
        self.model = model
        self.wrappers = wrappers

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.wrappers["forward"](*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Only names not set in __init__ get here.
        if name in self.wrappers:
            return self.wrappers[name]
        return getattr(self.model, name)

    @contextmanager
    def syncing_only(self, trained: Iterable[nn.Parameter]) -> Iterator[None]:
        """Within: the forward and backward passes all-reduce the gradients of only the wrappers
        holding a `trained` parameter. The GAN's generator loss back-propagates through the
        discriminator, whose gradients that phase throws away: no need to average them."""
        trained_ids = {id(p) for p in trained}
        with ExitStack() as stack:
            for wrapper in self.wrappers.values():
                if not any(id(p) in trained_ids for p in wrapper.parameters()):
                    stack.enter_context(wrapper.no_sync())
            yield


def distributed_view(
    model: nn.Module, entry_points: Iterable[str], trained: Iterable[nn.Parameter], compile: bool
) -> TrainingView:
    """`model` with each of its `entry_points` wrapped in DDP (then `torch.compile`d if
    `compile`). Call it after loading a resumed state: wrapping broadcasts rank 0's weights.
    ValueError if a `trained` parameter is outside every entry point (its gradients would never
    be averaged)."""
    wrappers: dict[str, nn.Module] = {}
    for name in entry_points:
        wrapped = DistributedDataParallel(_entry_module(model, name))
        wrappers[name] = torch.compile(wrapped) if compile else wrapped
    unwrapped = {id(p) for p in trained} - {id(p) for wrapper in wrappers.values() for p in wrapper.parameters()}
    outside = [name for name, p in model.named_parameters() if id(p) in unwrapped]
    if outside:
        raise ValueError(f"trained parameters outside the entry points {sorted(wrappers)}: {outside[:3]}")
    return TrainingView(model, wrappers)
