"""The baseline of `easerve bench serve`: a naive FastAPI + onnxruntime server, no batching.

    python -m easerve.bench.serve_naive --weights-dir weights --models eamlp-ea-tiny --port 8001

What a first server usually looks like: each request is decoded, preprocessed, run at batch 1
and postprocessed on FastAPI's thread pool, on one shared onnxruntime session (its `run` may be
called from several threads at once). It takes the service's image routes with `?model=` and one
image in any of the service's transports (a raw image body, one multipart/form-data file, or JSON
`{"image": "<base64>"}`, read by the service's own `codecs.uploads`), and does the service's own
decoding, pre- and post-processing (`bench.serve_pipeline`), so the two differ only in scheduling.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from easerve.artifacts.manifest import Manifest
from easerve.bench.serve_pipeline import IMAGE_TASKS, answer_upload, server_arguments
from easerve.service.codecs.uploads import read_image_upload
from easerve.service.errors import install_error_handlers
from easerve.service.model_files import discover_models
from easerve.service.runners.base import Runner
from easerve.service.runners.ort import OrtRunner
from easerve.service.settings import Settings


def create_naive_app(runners: dict[str, tuple[Runner, Manifest]]) -> FastAPI:
    """The naive server of `runners` ({model name: (runner, manifest)})."""
    app = FastAPI(title="naive per-request server")
    install_error_handlers(app)  # the service's errors (bad body, unknown type) as its JSON answers

    @app.get("/readyz")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    async def infer(request: Request) -> dict[str, Any]:
        name = request.query_params.get("model", "")
        if name not in runners:
            raise HTTPException(404, f"unknown model {name!r}")
        runner, manifest = runners[name]
        upload = await read_image_upload(request)
        results = await run_in_threadpool(answer_upload, runner, manifest, upload)
        return {"model": name, "results": results}

    for task in IMAGE_TASKS.values():
        app.add_api_route(task.route, infer, methods=["POST"])
    return app


def main(argv: list[str] | None = None) -> None:
    parser = server_arguments(__doc__.splitlines()[0])
    parser.add_argument("--spinning", action="store_true", help="idle onnxruntime threads spin for work")
    args = parser.parse_args(argv)
    settings = Settings(
        weights_dirs=args.weights_dir,
        models=args.models,
        intra_op_threads=args.threads,
        intra_op_spinning=args.spinning,
    )
    runners = {
        files.name: (OrtRunner(files, settings, files.manifest.max_batch_size), files.manifest)
        for files in discover_models(settings.weights_dirs, settings.models)
    }
    uvicorn.run(create_naive_app(runners), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
