"""The bundled image models served at another input size, for the high-resolution comparison.

The service resizes every image to its manifest's `preprocessing.image_size`, so sending 512x512
images to a model exported for 128x128 measures a 128x128 network. A model whose ONNX image input
has symbolic height and width (the segmentation and detection graphs) runs at any size: a copy of
its folder with the manifest's image size changed serves it at N x N, the same graph and weights
(linked, so the manifest's hashes still hold). Models with a fixed input size are left out.
"""

from __future__ import annotations

from pathlib import Path

from easerve.artifacts.manifest import MANIFEST_FILE, Manifest, discover_manifests, load_manifest, save_manifest


def takes_any_image_size(manifest: Manifest) -> bool:
    """True for an image model whose input's height and width are symbolic."""
    if manifest.preprocessing.kind != "image" or not manifest.inputs:
        return False
    height, width = manifest.inputs[0].shape[-2:]
    return isinstance(height, str) and isinstance(width, str)


def write_resized_model(model_dir: Path, size: int, out_dir: Path) -> Path:
    """`out_dir/<model>/` (new): every file of `model_dir` linked, the manifest rewritten with an image
    size of `size` x `size`. Returns the new folder."""
    manifest = load_manifest(model_dir)
    preprocessing = manifest.preprocessing.model_copy(update={"image_size": (size, size)})
    target = out_dir / model_dir.name
    target.mkdir(parents=True)
    for source in model_dir.iterdir():
        if source.name != MANIFEST_FILE:
            (target / source.name).symlink_to(source.resolve())
    save_manifest(target, manifest.model_copy(update={"preprocessing": preprocessing}))
    return target


def write_resized_models(weights_dirs: list[Path], size: int, out_dir: Path) -> list[str]:
    """Resized copies (`write_resized_model`) in `out_dir` of every model in `weights_dirs` that
    takes any image size; returns their names. Served from a weights directory listed before
    the originals, they stand in for them under the same names."""
    seen: set[str] = set()
    names = []
    for weights_dir in weights_dirs:
        for model_dir in discover_manifests(weights_dir):
            manifest = load_manifest(model_dir)
            if manifest.name in seen:  # the service serves the first folder of a name
                continue
            seen.add(manifest.name)
            if takes_any_image_size(manifest):
                write_resized_model(model_dir, size, out_dir)
                names.append(manifest.name)
    return names
