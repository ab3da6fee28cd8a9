"""The `easerve` command: one entry point, one subcommand per stage of the pipeline.

Each stage's `cli` module registers its arguments and runs the command; those modules import
only argparse at module level, so `easerve serve` never loads torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module with `add_arguments(parser)` and `run(args) -> int`
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "models": ("easerve.model_defs.cli", "list the registered models"),
    "train": ("easerve.training.cli", "train a registered model on a generated or user data set"),
    "evaluate": ("easerve.training.evaluation", "a checkpoint's metrics on its held-out test split"),
    "weights": ("easerve.training.report", "table of the trained checkpoints: metrics, size, time"),
    "export": ("easerve.export.cli", "export checkpoints to ONNX / INT8 / TensorRT / Triton + manifests"),
    "serve": ("easerve.service.cli", "serve exported models over REST (no torch needed)"),
    "bench": ("easerve.bench.cli", "benchmarks: attention cost, backends, the running service"),
    "loadtest": ("easerve.loadtest.cli", "locust load test, EA against self-attention"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="easerve", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is None or not module_name.startswith(error.name):
                raise
            continue  # a stage not installed in this environment
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
