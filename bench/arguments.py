"""What several benchmarks take the same way: the folders of the models they measure, and the
flags that hand those folders on to the `easerve serve` they start. Standard library only (see
easerve/cli.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
