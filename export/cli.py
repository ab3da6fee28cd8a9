"""`easerve export`: checkpoints -> ONNX (+ INT8 / FP16), manifests, TensorRT engines, Triton."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from easerve.artifacts.manifest import Manifest
    from easerve.export.pipeline import ExportOptions

Log = Callable[[str], None]

FORMATS = ("onnx", "trt", "triton")
EXIT_OK, EXIT_NOT_PRODUCED, EXIT_USAGE, EXIT_NO_TENSORRT = 0, 1, 2, 3


def _formats(text: str) -> list[str]:
    chosen = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"formats are a comma list of {', '.join(FORMATS)}; got {text!r}")
    return chosen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "models", nargs="*", metavar="MODEL", help="model folder names under --weights-dir (registry names)"
    )
    parser.add_argument("--all", action="store_true", help="every folder under --weights-dir that holds a checkpoint")
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=Path("weights"),
        help="where <model>/model.safetensors + checkpoint.json live; outputs are "
        "written next to them (default: %(default)s)",
    )
    parser.add_argument(
        "--format",
        type=_formats,
        default=["onnx"],
        metavar="LIST",
        help="comma list of onnx, trt, triton (default: onnx). trt and triton reuse "
        "the model's ONNX file when its manifest is current, else export it first",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="also write model.int8.onnx (static INT8 for CPU, calibrated on generated data)",
    )
    parser.add_argument(
        "--fp16", action="store_true", help="also write model.fp16.onnx (attention normalisation kept in FP32)"
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=32,
        help="largest batch the model is served at: manifest, TensorRT profile and "
        "Triton config (default: %(default)s)",
    )
    parser.add_argument(
        "--parity-samples",
        type=int,
        default=500,
        help="held-out samples checked against PyTorch (default: %(default)s)",
    )
    parser.add_argument(
        "--calibration-samples",
        type=int,
        default=128,
        help="training samples that calibrate INT8 ranges (default: %(default)s)",
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=2.0,
        metavar="POINTS",
        help="refuse an INT8 / FP16 graph whose task metric falls more than this "
        "many points below FP32 (default: %(default)s)",
    )
    parser.add_argument(
        "--max-abs-error",
        type=float,
        default=1e-4,
        help="parity bound on any output's absolute error (default: %(default)s)",
    )
    parser.add_argument(
        "--min-agreement", type=float, default=0.999, help="parity bound on task-level agreement (default: %(default)s)"
    )
    parser.add_argument(
        "--trt-precision",
        choices=["fp16", "fp32"],
        default="fp16",
        help="TensorRT engine precision; fp16 is built from the FP16 graph, so it "
        "implies --fp16 (default: %(default)s)",
    )
    parser.add_argument(
        "--engine-cache",
        type=Path,
        help="engine cache root, engines under <root>/tensorrt/; the service's --engine-cache-dir "
        "(default: $EASERVE_ENGINE_CACHE_DIR or ~/.cache/easerve/engines)",
    )
    parser.add_argument(
        "--triton-repo",
        type=Path,
        default=Path("triton_repository"),
        help="Triton model repository written by --format triton (default: %(default)s)",
    )
    parser.add_argument("--threads", type=int, help="onnxruntime threads for the checks")
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="only measure the model's peak working memory by input size and write it to its current "
        "manifest (models exported before it was measured); nothing else is exported",
    )
    parser.epilog = (
        "Exit status: 0 everything requested was written; 1 something was not (parity failed, "
        "INT8/FP16 refused, engine build failed); 2 usage error; 3 TensorRT not installed."
    )


def _model_dirs(args: argparse.Namespace) -> list[Path] | str:
    """The model folders to export, or an error message."""
    from easerve.export.pipeline import has_checkpoint

    if args.all == bool(args.models):
        return "name models or give --all (not both)"
    if args.all:
        found = (
            sorted(p for p in args.weights_dir.iterdir() if p.is_dir() and has_checkpoint(p))
            if args.weights_dir.is_dir()
            else []
        )
        return found or f"no checkpoints under {args.weights_dir}"
    missing = [m for m in args.models if not has_checkpoint(args.weights_dir / m)]
    if missing:
        return f"no checkpoint for {', '.join(missing)} under {args.weights_dir} (train it first)"
    return [args.weights_dir / m for m in args.models]


def run(args: argparse.Namespace) -> int:
    from easerve.artifacts.tensorrt import tensorrt_unavailable_reason
    from easerve.export.memory_profile import MemoryProfileError
    from easerve.export.onnx_graph import ExportError
    from easerve.export.parity import ParityError, ParityThresholds
    from easerve.export.pipeline import ExportOptions, current_manifest, export_checkpoint

    model_dirs = _model_dirs(args)
    if isinstance(model_dirs, str):
        print(f"error: {model_dirs}")
        return EXIT_USAGE
    if args.memory_only:
        return _memory_only(model_dirs)
    if "trt" in args.format and (reason := tensorrt_unavailable_reason()):
        print(f"error: --format trt: {reason}")
        return EXIT_NO_TENSORRT
    options = ExportOptions(
        int8=args.int8,
        fp16=args.fp16 or ("trt" in args.format and args.trt_precision == "fp16"),
        max_batch=args.max_batch,
        parity_samples=args.parity_samples,
        calibration_samples=args.calibration_samples,
        max_drop_points=args.max_drop,
        thresholds=ParityThresholds(args.max_abs_error, args.min_agreement),
        threads=args.threads,
    )
    status = EXIT_OK
    for model_dir in model_dirs:
        name = model_dir.name

        def log(message: str, name: str = name) -> None:
            print(f"[{name}] {message}", flush=True)

        manifest = None if "onnx" in args.format else _reusable(current_manifest(model_dir), options)
        if manifest is None:
            try:
                result = export_checkpoint(model_dir, options, log)
            except (ParityError, ExportError, MemoryProfileError) as error:
                print(f"error: {name}: {error}\n[{name}] nothing was written")
                status = EXIT_NOT_PRODUCED
                continue
            manifest = result.manifest
            if result.refused:
                status = EXIT_NOT_PRODUCED
            log(f"wrote {model_dir / manifest.onnx.path} and {model_dir / 'manifest.json'}")
        else:
            log(f"reusing {model_dir / manifest.onnx.path} (manifest is current)")
        if "triton" in args.format:
            status = max(status, _triton(args, model_dir, manifest, log))
        if "trt" in args.format:
            status = max(status, _tensorrt(args, model_dir, manifest, log))
    return status


def _memory_only(model_dirs: list[Path]) -> int:
    """`--memory-only`: the memory model of each current export, written to its manifest."""
    from easerve.export.memory_profile import MemoryProfileError
    from easerve.export.pipeline import add_memory_model

    status = EXIT_OK
    for model_dir in model_dirs:
        name = model_dir.name

        def log(message: str, name: str = name) -> None:
            print(f"[{name}] {message}", flush=True)

        try:
            memory = add_memory_model(model_dir, log).memory
        except (ValueError, MemoryProfileError) as error:
            print(f"error: {name}: {error}")
            status = EXIT_NOT_PRODUCED
            continue
        assert memory is not None
        figures = ", ".join(
            f"{size}: {peak / 2**20:.1f} MB" for size, peak in zip(memory.sizes, memory.measured_bytes, strict=True)
        )
        log(f"wrote the memory model to {model_dir / 'manifest.json'} ({memory.positions}: {figures})")
    return status


def _reusable(manifest: Manifest | None, options: ExportOptions) -> Manifest | None:
    """`manifest` if it is current and already has every variant asked for."""
    if manifest is None:
        return None
    kinds = {q.kind for q in manifest.quantized}
    wanted = {"int8-static"} if options.int8 else set()
    wanted |= {"fp16"} if options.fp16 else set()
    return manifest if wanted <= kinds and manifest.max_batch_size == options.max_batch else None


def _triton(args: argparse.Namespace, model_dir: Path, manifest: Manifest, log: Log) -> int:
    from easerve.export.triton import write_triton_model

    folder = write_triton_model(args.triton_repo, manifest, model_dir / manifest.onnx.path)
    log(f"Triton model repository entry: {folder}")
    return EXIT_OK


def _tensorrt(args: argparse.Namespace, model_dir: Path, manifest: Manifest, log: Log) -> int:
    from easerve.artifacts.tensorrt import (
        EngineBuildError,
        TensorRTUnavailable,
        build_engine,
        default_cache_root,
    )

    files = {"fp32": model_dir / manifest.onnx.path}
    for variant in manifest.quantized:
        if variant.kind == "fp16":
            files["fp16"] = model_dir / variant.file.path
    if args.trt_precision not in files:
        log(f"error: no checked {args.trt_precision} graph (it was refused); no engine built")
        return EXIT_NOT_PRODUCED
    try:
        engine = build_engine(files, manifest, args.trt_precision, args.engine_cache or default_cache_root(), log)
    except (EngineBuildError, TensorRTUnavailable) as error:
        log(f"error: {error}")
        return EXIT_NOT_PRODUCED
    log(f"TensorRT engine: {engine}")
    return EXIT_OK
