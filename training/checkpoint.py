"""Checkpoints: `model.safetensors` + `checkpoint.json`, and resumable optimizer state.

Nothing here unpickles: weights and optimizer tensors are safetensors, everything else JSON.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

import easerve
from model_defs.registry import get_model_entry

WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "checkpoint.json"
TRAIN_STATE_FILE = "train_state.safetensors"


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
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return f"{easerve.__version__}+g{commit}"


def save_checkpoint(out_dir: Path, model: nn.Module, info: CheckpointInfo) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, str(out_dir / WEIGHTS_FILE))
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


def save_train_state(
    out_dir: Path, optimizers: dict[str, torch.optim.Optimizer], step: int
) -> None:
    """Optimizer tensors as safetensors; hyper-parameters and the step in its JSON metadata."""
    tensors: dict[str, torch.Tensor] = {}
    groups: dict[str, Any] = {}
    for name, optimizer in optimizers.items():
        state = optimizer.state_dict()
        groups[name] = state["param_groups"]
        for index, values in state["state"].items():
            for key, value in values.items():
                tensors[f"{name}/{index}/{key}"] = torch.as_tensor(value).detach().clone()
    metadata = {"step": str(step), "param_groups": json.dumps(groups)}
    save_file(tensors, str(out_dir / TRAIN_STATE_FILE), metadata=metadata)


def load_train_state(out_dir: Path, optimizers: dict[str, torch.optim.Optimizer]) -> int:
    """Restore optimizer state saved by `save_train_state`; returns the step to continue from."""
    from safetensors import safe_open

    path = out_dir / TRAIN_STATE_FILE
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    groups = json.loads(metadata["param_groups"])
    for name, optimizer in optimizers.items():
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            owner, index, field = key.split("/", 2)
            if owner == name:
                state.setdefault(int(index), {})[field] = value
        optimizer.load_state_dict({"state": state, "param_groups": groups[name]})
    return int(metadata["step"])
