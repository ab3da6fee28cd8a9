"""`easerve weights`: the trained checkpoints under a weights folder as a markdown table.

Like every stage's CLI module it imports only argparse at module level, so building the
`easerve` parser in the torch-free serving install never loads torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from easerve.training.checkpoint import CheckpointInfo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights-dir", type=Path, default=Path("weights"), help="folder of <model>/checkpoint.json (default weights)"
    )
    parser.add_argument(
        "--commands", action="store_true", help="print the recorded training commands instead of the table"
    )


def _metrics_text(info: CheckpointInfo) -> str:
    return ", ".join(f"{name} {value:.3f}" for name, value in info.metrics.items())


def _row(folder: Path, info: CheckpointInfo) -> str:
    from easerve.training.checkpoint import WEIGHTS_FILE

    megabytes = (folder / WEIGHTS_FILE).stat().st_size / 2**20
    return (
        f"| `{info.model}` | {info.attention} | {_metrics_text(info)} | {megabytes:.2f} MB "
        f"| {info.steps} x {info.batch_size} | {info.training_seconds / 60:.1f} min |"
    )


def checkpoints(weights_dir: Path) -> list[tuple[Path, CheckpointInfo]]:
    """(folder, info) of every checkpoint directly under `weights_dir`, sorted by name."""
    from easerve.training.checkpoint import INFO_FILE, read_checkpoint_info

    folders = sorted(path.parent for path in weights_dir.glob(f"*/{INFO_FILE}"))
    return [(folder, read_checkpoint_info(folder)) for folder in folders]


def weights_table(weights_dir: Path) -> str:
    header = [
        "| model | attention | test metrics | weights | steps x batch | training time |",
        "|---|---|---|---|---|---|",
    ]
    return "\n".join(header + [_row(folder, info) for folder, info in checkpoints(weights_dir)])


def run(args: argparse.Namespace) -> int:
    found = checkpoints(args.weights_dir)
    if not found:
        print(f"error: no checkpoint.json under {args.weights_dir}/*/")
        return 2
    if args.commands:
        print("\n".join(info.command for _, info in found))
    else:
        print(weights_table(args.weights_dir))
    return 0
