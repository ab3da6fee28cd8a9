"""Model folders on disk: find them in the weights directories, check them before serving.

A model is a folder `<weights_dir>/<model>/` with `manifest.json` and the files it names (as in
a Triton model repository); the service needs nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from easerve.artifacts.manifest import Manifest, TensorInfo, discover_manifests, load_manifest, sha256_file

logger = logging.getLogger(__name__)

BATCH_DIM = "batch"


class ModelFilesError(Exception):
    """A model folder that cannot be served, with the reason."""


@dataclass(frozen=True)
class ModelFiles:
    """A model folder and its validated manifest."""

    directory: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def onnx_path(self) -> Path:
        return self.directory / self.manifest.onnx.path

    def verify(self) -> None:
        """ModelFilesError unless the ONNX file is there with the manifest's hash and every
        input and output has a leading batch dimension (the batcher concatenates along it)."""
        path = self.onnx_path
        if not path.is_file():
            raise ModelFilesError(f"{self.name}: {path} is missing")
        digest = sha256_file(path)
        if digest != self.manifest.onnx.sha256:
            raise ModelFilesError(
                f"{self.name}: {path} has sha256 {digest[:12]}..., the manifest says "
                f"{self.manifest.onnx.sha256[:12]}... (re-export the model)"
            )
        for tensor in [*self.manifest.inputs, *self.manifest.outputs]:
            if not _has_batch_dim(tensor):
                raise ModelFilesError(f"{self.name}: tensor {tensor.name!r} has no leading {BATCH_DIM!r} dimension")


def _has_batch_dim(tensor: TensorInfo) -> bool:
    return bool(tensor.shape) and tensor.shape[0] == BATCH_DIM


def discover_models(weights_dirs: list[Path], names: list[str]) -> list[ModelFiles]:
    """Every model folder in `weights_dirs` (the first folder wins a duplicated name), or only
    those named in `names` (ModelFilesError names any that is not found). Missing weights
    directories are skipped with a warning."""
    found: dict[str, ModelFiles] = {}
    for weights_dir in weights_dirs:
        if not weights_dir.is_dir():
            logger.warning("weights directory %s does not exist; skipped", weights_dir)
            continue
        for directory in discover_manifests(weights_dir):
            try:
                manifest = load_manifest(directory)
            except ValueError as error:
                raise ModelFilesError(f"{directory / 'manifest.json'}: invalid manifest: {error}") from error
            if manifest.name in found:
                logger.warning(
                    "%s: also in %s; serving the one in %s", manifest.name, directory, found[manifest.name].directory
                )
                continue
            found[manifest.name] = ModelFiles(directory, manifest)
    if not names:
        return list(found.values())
    missing = [name for name in names if name not in found]
    if missing:
        searched = ", ".join(str(path) for path in weights_dirs)
        raise ModelFilesError(
            f"model(s) {', '.join(missing)} not found in {searched}; found: {', '.join(sorted(found)) or 'none'}"
        )
    return [found[name] for name in names]
