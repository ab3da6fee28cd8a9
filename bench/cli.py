"""`easerve bench <benchmark>`: one subcommand per module `bench/<benchmark>.py`.

Like the stage modules, each benchmark module imports only argparse at module level, so building
the `easerve` parser never loads torch.
"""

from __future__ import annotations

import argparse
import importlib

# benchmark -> module with `add_arguments(parser)` and `run(args) -> int`
BENCHMARKS: dict[str, tuple[str, str]] = {
    "attention": (
        "easerve.bench.attention",
        "EA against self-attention: the paper's cost counts, measured latency and peak memory",
    ),
    "backends": (
        "easerve.bench.backends",
        "PyTorch eager against onnxruntime FP32 and INT8 for every exported bundled model",
    ),
    "serve": (
        "easerve.bench.serve",
        "the service on loopback: dynamic batching against max batch 1, a naive server and the offline ceiling",
    ),
    "robustness": (
        "easerve.bench.robustness",
        "attack scenarios against a live server: valid requests lost, attack statuses, RSS, bystander latency",
    ),
    "scheduling": (
        "easerve.bench.scheduling",
        "goodput under overload and mixed load: every scheduling policy, open and closed loop, and the simulator",
    ),
    "large-images": (
        "easerve.bench.large_images",
        "one large photo at a time through the routes that draw overlays: with and without, PNG and JPEG",
    ),
    "serve-ray": (
        "easerve.bench.serve_ray",
        "the Ray Serve application beside the single-process server (needs easerve[ray])",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, (module_name, help_text) in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(run_benchmark=module.run)


def run(args: argparse.Namespace) -> int:
    return int(args.run_benchmark(args) or 0)
