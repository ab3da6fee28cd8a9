"""What several benchmarks take the same way: the folders of the models they measure, the models
chosen from them, and the `easerve serve` command they start. Standard library only at import (see
easerve/cli.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from easerve.service.model_files import ModelFiles

T = TypeVar("T")


def add_weights_dirs(parser: argparse.ArgumentParser) -> None:
    """`--weights-dir DIR` (repeatable) into `weights_dirs`; the caller defaults it to weights/."""
    parser.add_argument(
        "--weights-dir",
        dest="weights_dirs",
        action="append",
        type=Path,
        metavar="DIR",
        help="folder of <model>/manifest.json folders; repeat for several (default: weights)",
    )


def weights_flags(weights_dirs: list[Path]) -> list[str]:
    """`--weights-dir` flags for `easerve serve` naming each of `weights_dirs`."""
    return [word for folder in weights_dirs for word in ("--weights-dir", str(folder))]


def serve_command(weights_dirs: list[Path], models: tuple[str, ...], serve_args: list[str]) -> list[str]:
    """`easerve serve` on 127.0.0.1 with `models`, then `serve_args` (they win over ours); the
    port is added per server."""
    weights = weights_flags(weights_dirs)
    return [
        sys.executable,
        "-m",
        "easerve.cli",
        "serve",
        "--host",
        "127.0.0.1",
        *weights,
        "--models",
        *models,
        "--log-level",
        "warning",
        *serve_args,
    ]


def ea_model_of_each_task(weights_dirs: list[Path], tasks: Iterable[str]) -> list[ModelFiles]:
    """The first EA model (by name) in `weights_dirs` of each of `tasks`, in their order; a
    task without one is left out."""
    from easerve.service.model_files import discover_models

    found = sorted(
        (files for files in discover_models(weights_dirs, []) if files.manifest.attention == "ea"),
        key=lambda files: files.name,
    )
    chosen = (next((files for files in found if files.manifest.task == task), None) for task in tasks)
    return [files for files in chosen if files is not None]


def chosen_models(args: argparse.Namespace, choose: Callable[[list[Path], list[str] | None], T]) -> T | None:
    """`choose(weights_dirs, names)` for the benchmark's `--weights-dir` (default weights/) and
    `--models`; None, the reason printed, when a model is missing (the benchmark exits 2)."""
    from easerve.service.model_files import ModelFilesError

    args.weights_dirs = args.weights_dirs or [Path("weights")]
    try:
        return choose(args.weights_dirs, args.models)
    except ModelFilesError as error:
        print(f"error: {error}")
        return None
