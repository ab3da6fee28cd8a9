"""A Triton / KServe model repository entry for an exported model:
`<repo>/<model>/config.pbtxt` + `<repo>/<model>/1/model.onnx`, the same ONNX file the service
serves, so users who outgrow one machine keep their artifact."""

from __future__ import annotations

import shutil
from pathlib import Path

from easerve.artifacts.manifest import Manifest
from easerve.artifacts.triton import config_pbtxt, model_configuration

MODEL_VERSION = "1"


def write_triton_model(repository: Path, manifest: Manifest, onnx_path: Path, instances: int = 1) -> Path:
    """Write (or replace) the model's entry in the Triton repository; returns its folder."""
    folder = repository / manifest.name
    version = folder / MODEL_VERSION
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, version / "model.onnx")
    (folder / "config.pbtxt").write_text(config_pbtxt(model_configuration(manifest, instances=instances)))
    return folder
