"""The peers `easerve bench serve` can set beside easerve: LitServe and Triton Inference Server
(via NVIDIA PyTriton), each serving the same ONNX models with the same work per image
(`bench.serve_litserve`, `bench.serve_triton`).

They need packages easerve does not (PyTriton pins numpy below 2), so they run under another
Python: the `peers` environment that `make peers` builds (build/peers), or `--peers-python`. A
peer that environment cannot import is left out, and the benchmark says so. Each takes the image
as base64 in JSON, the form both read: LitServe easerve's own `{"image": "<base64>"}`, Triton
a v2 BYTES element.

Only the standard library is imported at module level (see easerve/cli.py).
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PEERS_PYTHON = Path("build/peers/bin/python")
# The transport the peers are measured in (bench.serve_load.JSON_BASE64), and easerve beside them.
PEER_TRANSPORT = "json"


def _triton_body(image: bytes) -> bytes:
    element = base64.b64encode(image).decode("ascii")
    return json.dumps({"inputs": [{"name": "image", "shape": [1, 1], "datatype": "BYTES", "data": [element]}]}).encode()


@dataclass(frozen=True)
class Peer:
    key: str
    label: str
    module: str  # the server's module, run with `python -m`
    package: str  # what the peers environment must import
    # Answers 200 once the server is ready, "{model}" filled in with the last model it loads
    # (PyTriton loads them one by one, and Triton is ready before it has them all).
    ready_path: str
    route: str  # of a model's requests, "{model}" filled in
    # The request carrying an image; None: easerve's own JSON body ({"image": "<base64>"}).
    body: Callable[[bytes], bytes] | None

    def request_body(self, image: bytes, json_body: bytes) -> bytes:
        """The body that sends `image` to this peer; `json_body` is easerve's JSON one."""
        return json_body if self.body is None else self.body(image)

    def command(self, python: Path, names: list[str], port: int, threads: int, weights: list[str]) -> list[str]:
        models = ["--models", *names]
        return [str(python), "-m", self.module, "--port", str(port), *models, "--threads", str(threads), *weights]


PEERS: dict[str, Peer] = {
    peer.key: peer
    for peer in (
        Peer(
            "litserve",
            "LitServe",
            "easerve.bench.serve_litserve",
            "litserve",
            "/readyz",
            "/predict/{model}",
            None,
        ),
        Peer(
            "triton",
            "Triton (PyTriton)",
            "easerve.bench.serve_triton",
            "pytriton",
            "/v2/models/{model}/ready",
            "/v2/models/{model}/infer",
            _triton_body,
        ),
    )
}


def missing(peer: Peer, python: Path) -> str | None:
    """Why `python` cannot run `peer`'s server, or None when it can."""
    if not python.is_file():
        return f"no {python} (build it with `make peers`, or name one with --peers-python)"
    check = subprocess.run([str(python), "-c", f"import {peer.package}, easerve"], capture_output=True, text=True)
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        return f"{python} cannot import {peer.package} ({last})"
    return None
