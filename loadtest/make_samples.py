"""Write `loadtest/samples/`: a few real inputs from the generated data sets, with their answers.

    python -m easerve.loadtest.make_samples      # needs the training extra (torch); run once, commit

The load test and the endpoint check run where torch is not installed (the serving image, a
client machine), so they read these files instead of importing the generators. The samples come
from the test split, which no bundled model was trained on.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from easerve.loadtest.samples import INDEX_FILE, SAMPLES_DIR
from easerve.model_defs.labels import PRIMITIVE_CLASSES, PRIMITIVE_PARTS, SHAPE_CLASSES
from easerve.training.datasets.primitives3d import generate_primitives
from easerve.training.datasets.shapes2d import MULTI_SHAPE, SINGLE_SHAPE, render_scenes

SEED = 0
CLASSIFY_SIZE = 64  # the sizes the bundled models were trained at (training.datasets.sources)
SCENE_SIZE = 128
NUM_SCENES = 2
NUM_POINTS = 1024
# The per-pixel truths written with each scene: their name in the index, and the field of the
# rendered `Scenes` that holds them (what a judge compares an answer with).
SCENE_MAPS = {"mask": "masks", "instances": "instances"}


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def write_images(out: Path) -> list[dict]:
    """One single-shape 64x64 image per class; scene i has class i."""
    scenes = render_scenes(len(SHAPE_CLASSES), CLASSIFY_SIZE, SINGLE_SHAPE, SEED, "test")
    entries = []
    for image, labels in zip(scenes.images, scenes.labels):
        name = SHAPE_CLASSES[labels[0]]
        (out / f"image-{name}.png").write_bytes(_png(image))
        entries.append({"file": f"image-{name}.png", "label": name})
    return entries


def write_scenes(out: Path) -> list[dict]:
    """Multi-shape 128x128 scenes with their boxes, labels and per-pixel truths (`SCENE_MAPS`)."""
    scenes = render_scenes(NUM_SCENES, SCENE_SIZE, MULTI_SHAPE, SEED, "test")
    entries = []
    for index, (image, boxes, labels) in enumerate(zip(scenes.images, scenes.boxes, scenes.labels)):
        (out / f"scene-{index}.png").write_bytes(_png(image))
        maps = {}
        for name, field in SCENE_MAPS.items():
            maps[name] = f"scene-{index}-{name}.png"
            (out / maps[name]).write_bytes(_png(getattr(scenes, field)[index]))
        entries.append(
            {
                "file": f"scene-{index}.png",
                "maps": maps,
                "boxes": np.round(boxes, 2).tolist(),
                "labels": [SHAPE_CLASSES[label] for label in labels],
            }
        )
    return entries


def write_clouds(out: Path) -> list[dict]:
    """One 1024-point cloud per primitive class (.npy float32) and its part labels (.npy int64)."""
    clouds = generate_primitives(len(PRIMITIVE_CLASSES), NUM_POINTS, SEED, "test")
    entries = []
    for points, label, parts in zip(clouds.points, clouds.labels, clouds.parts):
        name = PRIMITIVE_CLASSES[label]
        np.save(out / f"cloud-{name}.npy", points.astype(np.float32))
        np.save(out / f"cloud-{name}-parts.npy", parts.astype(np.uint8))
        entries.append({"file": f"cloud-{name}.npy", "parts": f"cloud-{name}-parts.npy", "label": name})
    return entries


def main() -> int:
    SAMPLES_DIR.mkdir(exist_ok=True)
    index = {
        "source": f"training.datasets, test split, seed {SEED}",
        "part_names": list(PRIMITIVE_PARTS),
        "images": write_images(SAMPLES_DIR),
        "scenes": write_scenes(SAMPLES_DIR),
        "clouds": write_clouds(SAMPLES_DIR),
    }
    (SAMPLES_DIR / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")
    print(f"wrote {len(list(SAMPLES_DIR.iterdir()))} files to {SAMPLES_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
