"""`easerve evaluate`: a checkpoint's metrics on its held-out test split, measured as the trainer
measures them (the same `Task.evaluate`), optionally written back into `checkpoint.json` — for
example after the judge that scores the generators was retrained.

Like every stage's CLI module it imports only argparse at module level.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from easerve.training.cli import add_judge_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="checkpoint folder, e.g. weights/eamlp-ea-tiny")
    parser.add_argument(
        "--test-samples",
        type=int,
        help="size of the generated test split (default: the size the checkpoint "
        "was evaluated on, else the data set's default)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="evaluation batch (default 32)")
    add_judge_argument(parser)
    parser.add_argument("--write", action="store_true", help="replace the metrics recorded in checkpoint.json by these")


def run(args: argparse.Namespace) -> int:
    from easerve.model_defs.registry import get_model_entry
    from easerve.training import checkpoint
    from easerve.training.datasets import DatasetError
    from easerve.training.held_out import open_split
    from easerve.training.tasks import task_for
    from easerve.training.trainer import evaluate

    try:
        model, info = checkpoint.load_checkpoint(args.checkpoint)
    except FileNotFoundError as error:
        print(f"error: {error}")
        return 2
    try:
        # No stand-in data set: these metrics may be written back as the checkpoint's own.
        test = open_split(info, "test", args.test_samples or info.test_samples, fallback=False)
    except DatasetError as error:
        print(f"error: {error}")
        return 2
    task = task_for(get_model_entry(info.model), list(info.class_names), {"judge": args.judge})
    metrics = evaluate(task, model, test.dataset, args.batch_size)
    if not metrics:
        print(f"error: no metrics for {info.model} (generation needs a judge checkpoint: --judge)")
        return 2
    print(f"{info.model} on {test.description}:")
    for name, value in metrics.items():
        recorded = info.metrics.get(name)
        was = f" (recorded {recorded:.4f})" if recorded is not None else ""
        print(f"  {name} {value:.4f}{was}")
    if args.write:
        info = info.model_copy(update={"metrics": metrics, "test_samples": len(test.dataset)})
        checkpoint.save_info(args.checkpoint, info)
        print(f"wrote the metrics into {args.checkpoint / checkpoint.INFO_FILE}")
    return 0
