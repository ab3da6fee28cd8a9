"""A Triton Inference Server peer of `easerve bench serve`: NVIDIA PyTriton runs the real
`tritonserver` (its C++ HTTP front end and dynamic batcher) with each model as a Python function.

    python -m easerve.bench.serve_triton --weights-dir weights --models eamlp-ea-tiny --port 8003

Each model is bound under its own name with one BYTES input `image` (the PNG as base64 text: a
v2 JSON BYTES element) and one BYTES output `answer` (its result as JSON); Triton's dynamic
batcher gathers up to the manifest's max batch size with no queue delay, and the function runs the
service's decoding, pre- and post-processing on the batch (`bench.serve_pipeline`). Triton listens
on 127.0.0.1 only (HTTP at --port, gRPC and metrics on free ports); a model is ready at
`/v2/models/<model>/ready`.
Needs the `peers` environment (`make peers`).
"""

from __future__ import annotations

import base64
import os
import signal
import sysconfig
from collections.abc import Callable

import numpy as np
import orjson
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from easerve.bench.serve_pipeline import answer_images, decode_for, server_arguments
from easerve.loadtest.server import free_port
from easerve.service.model_files import ModelFiles, discover_models
from easerve.service.runners.ort import OrtRunner
from easerve.service.settings import Settings


def infer_function(files: ModelFiles, settings: Settings) -> Callable[..., dict[str, np.ndarray]]:
    """Triton's function for one model: a batch of base64 PNGs -> a batch of JSON answers."""
    manifest = files.manifest
    runner = OrtRunner(files, settings, manifest.max_batch_size)

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        images = [decode_for(manifest, base64.b64decode(bytes(item[0]))) for item in image]
        answers = [orjson.dumps(result) for result in answer_images(runner, manifest, images)]
        return {"answer": np.array(answers, dtype=np.object_).reshape(-1, 1)}

    return infer


def _own_libpython_first() -> None:
    """PyTriton's Python backend stub must load this interpreter's libpython (a distribution's
    older one beside a newer standard library fails at the first lock): put its directory first."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))


def _other_free_ports(taken: int, count: int) -> list[int]:
    """`count` distinct free loopback ports besides `taken` (the HTTP port, not yet bound: the
    system may offer it again)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port != taken and port not in ports:
            ports.append(port)
    return ports


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # Raised in the main thread, where `triton.serve()` waits: leaving the `with` stops Triton
    # (else its server process outlives this one).
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    parser = server_arguments(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    settings = Settings(weights_dirs=args.weights_dir, models=args.models, intra_op_threads=args.threads)
    _own_libpython_first()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    grpc_port, metrics_port = _other_free_ports(args.port, 2)
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.port,
        grpc_address="127.0.0.1",
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        allow_gpu_metrics=False,
    )
    with Triton(config=config) as triton:
        for files in discover_models(settings.weights_dirs, settings.models):
            triton.bind(
                model_name=files.name,
                infer_func=infer_function(files, settings),
                inputs=[Tensor(name="image", dtype=np.bytes_, shape=(1,))],
                outputs=[Tensor(name="answer", dtype=np.bytes_, shape=(1,))],
                config=ModelConfig(
                    max_batch_size=files.manifest.max_batch_size,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=0),
                ),
                strict=False,
            )
        triton.serve()


if __name__ == "__main__":
    main()
