"""A LitServe peer of `easerve bench serve`: the same ONNX models and the same work per image,
batched by LitServe.

    python -m easerve.bench.serve_litserve --weights-dir weights --models eamlp-ea-tiny --port 8002

One LitAPI per model at `/predict/<model>`, taking JSON `{"image": "<base64>"}`; LitServe gathers
up to the manifest's max batch size (no wait: batch timeout 0) and its worker runs the batch on
one onnxruntime session, with the service's own decoding, pre- and post-processing
(`bench.serve_pipeline`). Ready at `/readyz` (LitServe's health check, moved there). Needs the
`peers` environment (`make peers`).
"""

from __future__ import annotations

import base64
import os
import signal
from typing import Any

import litserve

from easerve.bench.serve_pipeline import answer_images, decode_for, server_arguments
from easerve.service.model_files import ModelFiles, discover_models
from easerve.service.runners.ort import OrtRunner
from easerve.service.settings import Settings

PEER_PATH = "/predict/{model}"


class ModelAPI(litserve.LitAPI):
    """One model: requests decoded as the service decodes them, batched, answered per image."""

    def __init__(self, files: ModelFiles, settings: Settings) -> None:
        manifest = files.manifest
        super().__init__(max_batch_size=manifest.max_batch_size, api_path=PEER_PATH.format(model=files.name))
        self.files = files
        self.settings = settings

    def setup(self, device: str) -> None:
        self.runner = OrtRunner(self.files, self.settings, self.files.manifest.max_batch_size)

    # Unannotated on purpose: LitServe reads the annotation to choose how it parses the body, and
    # without one it hands over the JSON body as a dict.
    def decode_request(self, request):  # noqa: ANN001
        return decode_for(self.files.manifest, base64.b64decode(request["image"]))

    def batch(self, inputs: list[Any]) -> list[Any]:
        return inputs

    def predict(self, images: Any) -> list[dict[str, object]]:
        images = images if isinstance(images, list) else [images]
        return answer_images(self.runner, self.files.manifest, images)

    def unbatch(self, results: list[dict[str, object]]) -> list[dict[str, object]]:
        return results

    def encode_response(self, result: Any) -> dict[str, Any]:
        results = result if isinstance(result, list) else [result]
        return {"model": self.files.name, "results": results}


def _stop_the_group(signum: int, frame: object) -> None:
    # LitServe's worker processes outlive a terminated server (they keep polling their queues):
    # stop the whole process group, this process with it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.killpg(0, signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    parser = server_arguments(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    os.setpgrp()
    signal.signal(signal.SIGTERM, _stop_the_group)
    settings = Settings(weights_dirs=args.weights_dir, models=args.models, intra_op_threads=args.threads)
    apis = [ModelAPI(files, settings) for files in discover_models(settings.weights_dirs, settings.models)]
    server = litserve.LitServer(apis, accelerator="cpu", workers_per_device=1, healthcheck_path="/readyz")
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
