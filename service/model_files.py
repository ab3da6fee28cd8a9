"""Model folders on disk: find them in the weights directories, check them before serving.

A model is a folder `<weights_dir>/<model>/` with `manifest.json` and the files it names (as in
a Triton model repository), optionally a `serving.json` (`service.model_config`); the service
needs nothing else. Versions are numbered sub-folders, `<model>/<version>/manifest.json`, the
newest served (a flat folder is version 1). `ModelFiles` points at one version and one variant
of the model (its fp32, fp16 or int8 graph).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from easerve.artifacts.manifest import (
    MANIFEST_FILE,
    Manifest,
    TensorInfo,
    Variant,
    VariantName,
    load_manifest,
    sha256_file,
)
from easerve.artifacts.shapes import BATCH_DIM

logger = logging.getLogger(__name__)


class ModelFilesError(Exception):
    """A model folder that cannot be served, with the reason."""


@dataclass(frozen=True)
class ModelFiles:
    """A model folder, its validated manifest, and the variant (graph) runners are built from."""

    directory: Path
    manifest: Manifest
    variant_name: VariantName = "fp32"
    version: int = 1

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def variant(self) -> Variant:
        variant = self.manifest.variant(self.variant_name)
        if variant is None:
            raise ModelFilesError(f"{self.name}: export wrote no {self.variant_name} graph")
        return variant

    @property
    def onnx_path(self) -> Path:
        return self.directory / self.variant.file.path

    def with_variant(self, name: VariantName) -> ModelFiles:
        return ModelFiles(self.directory, self.manifest, name, self.version)

    def verify(self) -> None:
        """ModelFilesError unless the variant's ONNX file is there with the manifest's hash and
        every input and output has a leading batch dimension (the batcher concatenates along it)."""
        path = self.onnx_path
        if not path.is_file():
            raise ModelFilesError(f"{self.name}: {path} is missing")
        digest = sha256_file(path)
        if digest != self.variant.file.sha256:
            raise ModelFilesError(
                f"{self.name}: {path} has sha256 {digest[:12]}..., the manifest says "
                f"{self.variant.file.sha256[:12]}... (re-export the model)"
            )
        for tensor in [*self.manifest.inputs, *self.manifest.outputs]:
            if not _has_batch_dim(tensor):
                raise ModelFilesError(f"{self.name}: tensor {tensor.name!r} has no leading {BATCH_DIM!r} dimension")


def _has_batch_dim(tensor: TensorInfo) -> bool:
    return bool(tensor.shape) and tensor.shape[0] == BATCH_DIM


def _newest_version(folder: Path) -> tuple[Path, int] | None:
    """The folder holding the newest version's manifest in a model folder, and its number."""
    versions = [
        (int(child.name), child)
        for child in folder.iterdir()
        if child.is_dir() and child.name.isdigit() and (child / MANIFEST_FILE).is_file()
    ]
    if versions:
        number, directory = max(versions)
        return directory, number
    return (folder, 1) if (folder / MANIFEST_FILE).is_file() else None


def read_model_files(directory: Path, version: int) -> ModelFiles:
    """The model of one version folder (ModelFilesError for an invalid manifest)."""
    try:
        manifest = load_manifest(directory)
    except ValueError as error:
        raise ModelFilesError(f"{directory / MANIFEST_FILE}: invalid manifest: {error}") from error
    return ModelFiles(directory, manifest, version=version)


def scan_models(weights_dirs: list[Path]) -> dict[str, ModelFiles]:
    """The newest version of every model folder in `weights_dirs`, by name (the first weights
    directory wins a duplicated name). Missing weights directories are skipped with a warning."""
    found: dict[str, ModelFiles] = {}
    for weights_dir in weights_dirs:
        if not weights_dir.is_dir():
            logger.warning("weights directory %s does not exist; skipped", weights_dir)
            continue
        for folder in sorted(child for child in weights_dir.iterdir() if child.is_dir()):
            newest = _newest_version(folder)
            if newest is None:
                continue
            files = read_model_files(*newest)
            if files.name in found:
                logger.warning("%s: also in %s; serving the one in %s", files.name, folder, found[files.name].directory)
                continue
            found[files.name] = files
    return found


def discover_models(weights_dirs: list[Path], names: list[str]) -> list[ModelFiles]:
    """The newest version of every model in `weights_dirs`, or only those named in `names`
    (ModelFilesError names any that is not found)."""
    found = scan_models(weights_dirs)
    if not names:
        return list(found.values())
    missing = [name for name in names if name not in found]
    if missing:
        searched = ", ".join(str(path) for path in weights_dirs)
        raise ModelFilesError(
            f"model(s) {', '.join(missing)} not found in {searched}; found: {', '.join(sorted(found)) or 'none'}"
        )
    return [found[name] for name in names]
