"""`easerve train`: train a registered model with the bundled trainer."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="registry name, e.g. eamlp-ea-tiny (see `easerve models`)")
    parser.add_argument(
        "--data",
        help="generated data set (shapes-2d, primitives-3d) or a path, optionally prefixed with "
        "its format (imagefolder:, coco:, voc:, modelnet40:, shapenet-part:); default: the "
        "task's generated set",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimisation steps (global batches)")
    length.add_argument("--epochs", type=float, help="passes over the training split (default 1)")
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size (default 32)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, init and order")
    parser.add_argument("--train-samples", type=int, help="size of a generated training split")
    parser.add_argument("--test-samples", type=int, help="size of a generated test split")
    parser.add_argument("--eval-every", type=int, help="evaluate on the test split every N steps")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint and optimizer state in --out"
    )
    parser.add_argument("--out", type=Path, help="checkpoint folder (default weights/<model>)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (GPU only; refused on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (meant for GPU runs)")
    add_judge_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--input-size",
        type=int,
        help="image side (segmentation, detection) or points per cloud (point "
        "clouds) of the generated training and test data; default: the "
        "registry's example size",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="data-loading processes per training process (default: none for generated and other "
        "in-memory data; for data read from files, the spare CPUs, at most 4)",
    )
    parser.epilog = (
        "Multi-process: torchrun --nproc_per_node N -m easerve.cli train MODEL ... "
        "(gloo on CPU, nccl on GPU; --batch-size stays the global batch, a multiple of N)."
    )


def add_judge_argument(parser: argparse.ArgumentParser) -> None:
    """`--judge`, shared by `easerve train` and `easerve evaluate`."""
    parser.add_argument(
        "--judge",
        type=Path,
        help="generation only: classifier checkpoint that scores generated images (default weights/eamlp-ea-tiny)",
    )


def run(args: argparse.Namespace) -> int:
    from easerve.training.trainer import TrainConfig, train

    if args.amp and not args.device.startswith("cuda"):
        print("error: --amp needs a CUDA device (--device cuda); it is off on CPU")
        return 2
    config = TrainConfig(
        model=args.model,
        out=args.out or Path("weights") / args.model,
        data=args.data,
        steps=args.steps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        train_samples=args.train_samples,
        test_samples=args.test_samples,
        eval_every=args.eval_every,
        resume=args.resume,
        amp=args.amp,
        compile=args.compile,
        device=args.device,
        judge=args.judge,
        progress=not args.no_progress,
        input_size=args.input_size,
        workers=args.workers,
    )
    info = train(config)
    if info.metrics:
        print(
            f"{info.model}: "
            + ", ".join(f"{k}={v:.4f}" for k, v in info.metrics.items())
            + f" ({info.training_seconds:.0f}s) -> {config.out}"
        )
    return 0
