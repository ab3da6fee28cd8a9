"""The one training loop, for every task.

Data parallel under `torchrun`: a DistributedSampler gives every process its share of the same
global batch (drawn from one seeded permutation, `training.loader`), and DistributedDataParallel
averages the gradients (gloo on CPU, nccl on GPU) and makes BatchNorm buffers follow rank 0
(`training.distributed`), so N processes train the same model as one process with the same
global batch (BatchNorm aside: it normalises each process's share with its own statistics).
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from easerve.model_defs.registry import ModelEntry, get_model_entry
from easerve.training import checkpoint
from easerve.training.datasets import generated_source, open_dataset
from easerve.training.distributed import Distributed, TrainingView, distributed_view, init_distributed
from easerve.training.loader import batches, default_workers, evaluation_loader, train_loader
from easerve.training.tasks import Phase, Task, task_for


@dataclass
class TrainConfig:
    model: str
    out: Path
    data: str | None = None
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 32
    lr: float = 1e-3
    warmup_fraction: float = 0.05
    seed: int = 0
    train_samples: int | None = None
    test_samples: int | None = None
    eval_every: int | None = None
    resume: bool = False
    amp: bool = False
    compile: bool = False
    device: str = "cpu"
    judge: Path | None = None
    progress: bool = True
    input_size: int | None = None
    # Data-loading worker processes per training process; None: `loader.default_workers`.
    workers: int | None = None


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _output_size_override(entry: ModelEntry, num_classes: int) -> dict[str, int]:
    """Fit the model's output size to the data set's class list (user data sets)."""
    for name in ("num_classes", "num_outputs"):
        if hasattr(entry.config, name) and getattr(entry.config, name) != num_classes:
            return {name: num_classes}
    return {}


def _to_device(batch: Any, device: str) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def evaluate(task: Task, model: nn.Module, dataset: Dataset, batch_size: int) -> dict[str, float]:
    """The task's metrics on a held-out data set, in eval mode without gradients."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        result = task.evaluate(model, evaluation_loader(dataset, batch_size, task.entry.spec.target))
    model.train(was_training)
    return result


def train(config: TrainConfig) -> checkpoint.CheckpointInfo:
    """Train `config.model`, evaluate on the test split, write the checkpoint to `config.out`."""
    ddp = init_distributed(config.device)
    torch.manual_seed(config.seed)
    entry = get_model_entry(config.model)
    data = config.data or generated_source(entry.task)
    size = _data_size(entry, config.input_size)
    train_set = open_dataset(data, entry.task, "train", seed=config.seed, num_samples=config.train_samples, **size)
    test_set = open_dataset(data, entry.task, "test", seed=config.seed, num_samples=config.test_samples, **size)
    workers = default_workers(train_set, ddp.world_size) if config.workers is None else config.workers
    pin_memory = config.device.startswith("cuda")
    loader = train_loader(train_set, entry.spec.target, config.batch_size, config.seed, ddp, workers, pin_memory)
    class_names = list(train_set.class_names)
    model = entry.create(**_output_size_override(entry, len(class_names))).to(config.device)
    task = task_for(entry, class_names, {"judge": config.judge})
    phases = task.phases()
    optimizers = {
        p.name: torch.optim.AdamW(
            p.parameters(model), lr=config.lr * p.lr_scale, betas=p.betas, weight_decay=p.weight_decay
        )
        for p in phases
    }
    start_step = 0
    earlier: checkpoint.CheckpointInfo | None = None
    if config.resume:
        checkpoint_model, earlier = checkpoint.load_checkpoint(config.out)
        model.load_state_dict(checkpoint_model.state_dict())
        start_step = checkpoint.load_train_state(config.out, model, optimizers)
    training_model = _training_model(model, task, phases, config.compile, ddp)

    steps_per_epoch = max(len(train_set) // config.batch_size, 1)
    total_steps = config.steps or max(int(round((config.epochs or 1) * steps_per_epoch)), 1)
    warmup = max(int(total_steps * config.warmup_fraction), 1)
    schedulers = [
        torch.optim.lr_scheduler.LambdaLR(o, lambda s: cosine_with_warmup(s + start_step, total_steps, warmup))
        for o in optimizers.values()
    ]
    started = time.perf_counter()
    bar = tqdm(
        range(start_step, total_steps),
        desc=config.model,
        initial=start_step,
        total=total_steps,
        disable=not (config.progress and ddp.is_main),
        dynamic_ncols=True,
    )
    model.train()
    for step, batch in zip(bar, batches(loader, start_step)):
        losses = _train_step(training_model, _to_device(batch, config.device), step, phases, optimizers, config.amp)
        for scheduler in schedulers:
            scheduler.step()
        elapsed = time.perf_counter() - started
        bar.set_postfix(
            **{k: f"{v:.3f}" for k, v in losses.items()},
            img_s=f"{(step + 1 - start_step) * config.batch_size / elapsed:.0f}",
        )
        if config.eval_every and (step + 1) % config.eval_every == 0 and ddp.is_main:
            tqdm.write(f"step {step + 1}: {evaluate(task, model, test_set, config.batch_size)}")
    training_seconds = time.perf_counter() - started
    command = shlex.join(["easerve", *sys.argv[1:]]) if sys.argv else ""
    if earlier is not None:  # a resumed run: the checkpoint tells the whole history
        training_seconds += earlier.training_seconds
        # A resume that trains no further step only re-evaluates: the earlier commands give
        # the same checkpoint.
        command = f"{earlier.command} && {command}" if total_steps > start_step else earlier.command

    model = model.cpu()
    if ddp.is_main:
        checkpoint.save_train_state(config.out, model, optimizers, total_steps)
    checkpoint.round_to_storage_precision(model)
    results = evaluate(task, model, test_set, config.batch_size) if ddp.is_main else {}
    info = checkpoint.CheckpointInfo(
        model=entry.name,
        task=entry.task,
        attention=entry.attention,
        config=dataclasses.asdict(model.config),
        class_names=class_names,
        preprocessing=task.preprocessing(test_set[0][0]),
        metrics=results,
        dataset=data,
        seed=config.seed,
        test_samples=len(test_set),
        steps=total_steps,
        batch_size=config.batch_size,
        learning_rate=config.lr,
        training_seconds=round(training_seconds, 1),
        world_size=ddp.world_size,
        device=config.device,
        code_version=checkpoint.code_version(),
        torch_version=torch.__version__,
        command=command,
    )
    if ddp.is_main:
        checkpoint.save_checkpoint(config.out, model, info)
    if ddp.world_size > 1:
        dist.barrier()
    return info


def _data_size(entry: ModelEntry, input_size: int | None) -> dict[str, int]:
    """Sample size of the generated data: the model's default, or `input_size` (image side or
    point count) for models whose input size is variable."""
    if entry.spec.data == "pointcloud":
        return {"num_points": input_size or entry.example_dims["points"]}
    # The image the model learns from: what it reads, or for a generator what it draws.
    image = entry.inputs[0] if entry.spec.request == "image" else entry.outputs[0]
    if input_size is not None and all(isinstance(dim, int) for dim in image.shape[1:]):
        raise ValueError(f"{entry.name} has a fixed input size; --input-size is for variable ones")
    return {"size": input_size or entry.concrete_shape(image, 1)[-1]}


def _training_model(
    model: nn.Module, task: Task, phases: list[Phase], compile: bool, ddp: Distributed
) -> nn.Module | TrainingView:
    """What the phases' losses are called with: the model itself (`torch.compile`d if `compile`)
    in a single process; under torchrun, its view whose entry points run through DDP."""
    if ddp.world_size == 1:
        return torch.compile(model) if compile else model
    trained = [p for phase in phases for p in phase.parameters(model)]
    return distributed_view(model, task.entry_points, trained, compile)


def _gradient_sync(model: nn.Module | TrainingView, optimizer: torch.optim.Optimizer) -> AbstractContextManager:
    """Where the backward pass averages gradients over the processes: for the parameters of
    `optimizer` only (nothing to do in a single process)."""
    if isinstance(model, TrainingView):
        return model.syncing_only(p for group in optimizer.param_groups for p in group["params"])
    return nullcontext()


def _train_step(
    model: nn.Module | TrainingView,
    batch: Any,
    step: int,
    phases: list[Phase],
    optimizers: dict[str, torch.optim.Optimizer],
    amp: bool,
) -> dict[str, float]:
    """One optimiser step of every phase due at (0-based) `step` on `batch`; their losses."""
    losses = {}
    for phase in (p for p in phases if step >= p.first_step):
        optimizer = optimizers[phase.name]
        optimizer.zero_grad(set_to_none=True)
        with _gradient_sync(model, optimizer):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = phase.loss(model, batch)
            loss.backward()
        optimizer.step()
        losses[phase.name] = float(loss.detach())
    return losses
