"""Checkpoints: `model.safetensors` + `checkpoint.json`, and the resumable training state.

`model.safetensors` keeps floating-point tensors in half precision (the released weights: half
the bytes, and the recorded metrics are measured on exactly these values); the exact FP32
weights and the optimizer state live in `train_state.safetensors`, which `--resume` reads.
Nothing here unpickles: tensors are safetensors, everything else JSON.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from safetensors.torch import load_file, load_model, save_file
from torch import nn

import easerve
from easerve.model_defs.registry import get_model_entry

WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "checkpoint.json"
TRAIN_STATE_FILE = "train_state.safetensors"
# Key prefix of the FP32 weights inside the train state (optimizer keys start with a phase name).
MODEL_PREFIX = "weights:"


class CheckpointInfo(BaseModel):
    """What `checkpoint.json` records about a trained model."""

    model: str
    task: str
    attention: str
    config: dict[str, Any]
    class_names: list[str]
    preprocessing: dict[str, Any]
    metrics: dict[str, float]
    dataset: str
    seed: int
    # Samples of the test split the metrics are measured on (None: not recorded).
    test_samples: int | None = None
    steps: int
    batch_size: int
    learning_rate: float
    training_seconds: float
    world_size: int = 1
    device: str = "cpu"
    code_version: str
    torch_version: str
    command: str = ""


def code_version() -> str:
    """The package version plus the git commit of the working tree, when there is one."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return f"{easerve.__version__}+g{commit}"


def _at_rest(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor as `model.safetensors` stores it: FP16 unless it is not floating point or
    FP16 cannot hold its values."""
    if not tensor.is_floating_point():
        return tensor
    half = tensor.half()
    return half if torch.isfinite(half).all() or not torch.isfinite(tensor).all() else tensor


def round_to_storage_precision(model: nn.Module) -> None:
    """Give the model, in place, the values its saved checkpoint will load back."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.copy_(_at_rest(tensor))


def save_checkpoint(out_dir: Path, model: nn.Module, info: CheckpointInfo) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {name: _at_rest(t).contiguous() for name, t in model.state_dict().items()}
    save_file(tensors, str(out_dir / WEIGHTS_FILE))
    save_info(out_dir, info)


def save_info(out_dir: Path, info: CheckpointInfo) -> None:
    (out_dir / INFO_FILE).write_text(info.model_dump_json(indent=2) + "\n")


def read_checkpoint_info(checkpoint_dir: Path) -> CheckpointInfo:
    path = checkpoint_dir / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint.json (train the model first)")
    return CheckpointInfo.model_validate_json(path.read_text())


def load_checkpoint(checkpoint_dir: Path) -> tuple[nn.Module, CheckpointInfo]:
    """Rebuild the registered model from its recorded config and load the weights (eval mode)."""
    info = read_checkpoint_info(checkpoint_dir)
    entry = get_model_entry(info.model)
    known = {f.name for f in dataclasses.fields(entry.config)}
    model = entry.create(**{k: v for k, v in info.config.items() if k in known})
    load_model(model, str(checkpoint_dir / WEIGHTS_FILE), strict=True)
    return model.eval(), info


def save_train_state(out_dir: Path, model: nn.Module, optimizers: dict[str, torch.optim.Optimizer], step: int) -> None:
    """The FP32 weights and optimizer tensors as safetensors; hyper-parameters and the step in
    its JSON metadata."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"{MODEL_PREFIX}{name}": t.detach().clone() for name, t in model.state_dict().items()}
    groups: dict[str, Any] = {}
    for name, optimizer in optimizers.items():
        state = optimizer.state_dict()
        groups[name] = state["param_groups"]
        for index, values in state["state"].items():
            for key, value in values.items():
                tensors[f"{name}/{index}/{key}"] = torch.as_tensor(value).detach().clone()
    metadata = {"step": str(step), "param_groups": json.dumps(groups)}
    save_file(tensors, str(out_dir / TRAIN_STATE_FILE), metadata=metadata)


def load_train_state(out_dir: Path, model: nn.Module, optimizers: dict[str, torch.optim.Optimizer]) -> int:
    """Restore the weights (when the state holds them) and optimizer state saved by
    `save_train_state`; returns the step to continue from."""
    from safetensors import safe_open

    path = out_dir / TRAIN_STATE_FILE
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    weights = {k.removeprefix(MODEL_PREFIX): v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    if weights:
        model.load_state_dict(weights, strict=True)
    groups = json.loads(metadata["param_groups"])
    for name, optimizer in optimizers.items():
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith(MODEL_PREFIX):
                continue
            owner, index, field = key.split("/", 2)
            if owner == name:
                state.setdefault(int(index), {})[field] = value
        optimizer.load_state_dict({"state": state, "param_groups": groups[name]})
    return int(metadata["step"])
