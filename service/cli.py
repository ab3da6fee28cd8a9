"""`easerve serve`: serve exported models over REST (no torch needed).

Every flag overrides the matching `EASERVE_*` environment variable (see `service.settings`);
the API key is only read from `EASERVE_API_KEY`, so it never shows in the process list.
Exit status: 0 after a clean (drained) shutdown, 1 if a model failed to load or the server
could not start, 2 for invalid settings or missing models.
"""

from __future__ import annotations

import argparse
from pathlib import Path

BACKEND_CHOICES = ("auto", "onnxruntime", "tensorrt", "torch")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `easerve serve`'s flags; every default is None so the settings decide."""
    models = parser.add_argument_group("models")
    models.add_argument(
        "--weights-dir",
        dest="weights_dirs",
        action="append",
        type=Path,
        metavar="DIR",
        help="folder of <model>/manifest.json folders; repeat for several (default: weights)",
    )
    models.add_argument("--models", nargs="+", metavar="NAME", help="serve only these models (default: all found)")
    models.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        help="runner backend; auto picks the best available and logs why (default: auto)",
    )
    models.add_argument("--engine-cache-dir", type=Path, metavar="DIR", help="where TensorRT engines are cached")
    models.add_argument("--tensorrt-fp16", action="store_const", const=True, help="build TensorRT engines in FP16")
    models.add_argument("--intra-op-threads", type=int, metavar="N", help="threads inside an operator (0: default)")
    models.add_argument("--inter-op-threads", type=int, metavar="N", help="threads across operators (0: default)")
    models.add_argument(
        "--intra-op-spinning",
        action="store_const",
        const=True,
        help="let idle intra-op threads spin for work (lower latency at low load, CPU taken from the rest)",
    )

    server = parser.add_argument_group("server")
    server.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    server.add_argument("--port", type=int, help="port to listen on (default: 8000)")
    server.add_argument("--workers", type=int, metavar="N", help="threads for decoding and pre/post-processing")
    server.add_argument("--log-level", choices=LOG_LEVELS, help="(default: info)")
    server.add_argument("--access-log", action="store_const", const=True, help="log every request")
    server.add_argument(
        "--drain-timeout",
        dest="drain_timeout_s",
        type=float,
        metavar="S",
        help="on SIGTERM, how long queued requests may take (default: 30)",
    )

    scheduling = parser.add_argument_group("scheduling")
    scheduling.add_argument(
        "--max-batch-size", type=int, metavar="N", help="cap on the batch size (default: manifest's)"
    )
    scheduling.add_argument(
        "--max-queue-delay-ms",
        type=float,
        metavar="MS",
        help="wait up to this long from the oldest request for a fuller batch (default: 0)",
    )
    scheduling.add_argument("--max-queue-size", type=int, metavar="N", help="queued requests per model before 429")
    scheduling.add_argument(
        "--instances",
        type=int,
        metavar="N",
        help="instances of each model, each a runner on its own thread computing its own batch (default: 1)",
    )
    scheduling.add_argument(
        "--timeout",
        dest="default_timeout_s",
        type=float,
        metavar="S",
        help="default request deadline in seconds (default: 30)",
    )

    limits = parser.add_argument_group("input limits")
    limits.add_argument("--max-body-bytes", type=int, metavar="N", help="request body limit (default: 32 MiB)")
    limits.add_argument(
        "--max-images",
        dest="max_images_per_request",
        type=int,
        metavar="N",
        help="images per request and n of /v1/generate (default: 16)",
    )
    limits.add_argument("--max-image-pixels", type=int, metavar="N", help="pixels of one image (default: 25e6)")
    limits.add_argument("--max-points", type=int, metavar="N", help="points of one cloud (default: 200000)")


def run(args: argparse.Namespace) -> int:
    """Build the settings from the environment and flags, load the models, serve until SIGTERM."""
    import logging

    import uvicorn
    from pydantic import ValidationError

    from service.app import create_app
    from service.model_files import ModelFilesError
    from service.server import DrainingServer
    from service.settings import Settings

    overrides = {key: value for key, value in vars(args).items() if key in Settings.model_fields and value is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        print(f"easerve serve: invalid settings:\n{error}")
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server: DrainingServer | None = None

    def stop_on_load_failure(reason: str) -> None:
        if server is not None:
            server.stop()

    try:
        app = create_app(settings, on_load_failure=stop_on_load_failure)
    except ModelFilesError as error:
        logging.getLogger("easerve").error("%s", error)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=int(settings.drain_timeout_s) + 5,
    )
    lifecycle = app.state.service.lifecycle
    server = DrainingServer(config, drain=lifecycle.drain)
    server.run()
    if not server.started or lifecycle.error:
        return 1
    return 0
