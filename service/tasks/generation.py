"""Class-conditional generation: `n` images of one class, deterministic for a seed.

Image i of a request draws its latent vector from a generator seeded with (seed, i), so the
same (label, seed) gives the same images, and image i does not depend on `n`. The model's
float input is the latent vector, its integer input the class label; its output is in [-1, 1].
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from easerve.artifacts.manifest import Manifest, TensorInfo
from easerve.service.codecs.images import encode_png_base64
from easerve.service.errors import InvalidInput
from easerve.service.schemas import InferenceResponse

MAX_SEED = 2**63 - 1


class GenerateRequest(BaseModel):
    label: str | int = Field(description="class name or index")
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    n: int = Field(default=1, ge=1, description="number of images")


class GenerateResponse(InferenceResponse):
    label: str
    seed: int
    images: list[str] = Field(description="base64 RGB PNGs")


def label_index(label: str | int, labels: list[str]) -> int:
    """The class index of a name or index; InvalidInput lists the classes if unknown."""
    if isinstance(label, int):
        if 0 <= label < len(labels):
            return label
    elif label in labels:
        return labels.index(label)
    raise InvalidInput(f"unknown class {label!r}; classes: {', '.join(labels)} (or their index 0..{len(labels) - 1})")


def _inputs_by_role(manifest: Manifest) -> tuple[TensorInfo, TensorInfo]:
    latent = [t for t in manifest.inputs if t.dtype.startswith("float")]
    label = [t for t in manifest.inputs if t.dtype.startswith("int")]
    if len(latent) != 1 or len(label) != 1:
        raise ValueError(f"{manifest.name}: a generator needs one float (latent) and one integer (label) input")
    return latent[0], label[0]


def latent_inputs(manifest: Manifest, label: int, seed: int, n: int) -> dict[str, np.ndarray]:
    """The generator's inputs for `n` images of class `label` from `seed`."""
    latent, label_input = _inputs_by_role(manifest)
    z_dim = manifest.preprocessing.z_dim or int(latent.shape[-1])
    z = np.stack([np.random.default_rng([seed, i]).standard_normal(z_dim) for i in range(n)])
    return {
        latent.name: z.astype(latent.dtype),
        label_input.name: np.full(n, label, dtype=label_input.dtype),
    }


def generated_bytes(manifest: Manifest, n: int) -> int:
    """Estimated working memory of `n` generated images: the float output, its uint8 copy and
    the PNGs, per pixel of the model's output."""
    pixels = 1
    for dim in manifest.outputs[0].shape[1:]:
        pixels *= dim if isinstance(dim, int) else 1
    return n * pixels * 12


def to_pngs(outputs: dict[str, np.ndarray], manifest: Manifest) -> list[str]:
    """Base64 PNGs of the generated (n, 3, H, W) images in [-1, 1]."""
    images = outputs[manifest.outputs[0].name]
    pixels = ((images.astype(np.float32).clip(-1, 1) + 1) * 127.5).round().astype(np.uint8)
    return [encode_png_base64(np.ascontiguousarray(image.transpose(1, 2, 0))) for image in pixels]
