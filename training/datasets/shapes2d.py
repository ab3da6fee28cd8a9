"""Generated 2-D shape scenes: one renderer gives class labels, boxes and masks.

A scene is a background (a solid colour or a linear gradient) with one or more shapes of
`SHAPE_CLASSES` drawn on it in order, each anti-aliased (supersampled), in a colour that
contrasts with the whole background and with the scene's other shapes, then uniform grey pixel noise. Labels
come from the same silhouettes the image is drawn from, so they agree by construction:

- an object's *silhouette* is the pixels it covers at least half of;
- its box is the tight extent of its silhouette (xyxy, pixel i spans [i, i + 1));
- the instance / class masks give each pixel the topmost silhouette covering it.

Every scene is built from its own random stream (`streams.sample_rng`), so scenes are
deterministic by (seed, split, index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from easerve.model_defs.labels import SHAPE_CLASSES
from easerve.training.datasets.canonical import Split, tight_box
from easerve.training.datasets.streams import sample_rng

SUPERSAMPLE = 4
# Euclidean RGB distances (out of 441): a shape against any background colour under it, and
# against the other shapes of its scene (they may touch or overlap a little).
MIN_BACKGROUND_CONTRAST = 110.0
MIN_OBJECT_CONTRAST = 70.0
MAX_NOISE_AMPLITUDE = 12.0  # uniform pixel noise in +-amplitude, amplitude random per image
ELLIPSE_ASPECT = (0.4, 0.6)  # well away from 1, so an ellipse never passes for a circle
STAR_INNER_RADIUS = 0.45
PLACEMENT_ATTEMPTS = 50


@dataclass(frozen=True)
class SceneLayout:
    """How many shapes a scene holds, how big they are and how much they may overlap.

    `radius` bounds each shape's circumradius as a fraction of the image size; `max_overlap`
    bounds the silhouette overlap of any two shapes as a fraction of the smaller silhouette.
    """

    name: str
    min_objects: int
    max_objects: int
    radius: tuple[float, float]
    max_overlap: float = 0.0
    # Chance that an object takes the class of the one drawn before it, and chance that it is
    # placed against that one: touching and occluding objects of one class, which only
    # instance masks tell apart.
    same_class: float = 0.0
    touching: float = 0.0


SINGLE_SHAPE = SceneLayout("single", 1, 1, (0.22, 0.42))
MULTI_SHAPE = SceneLayout("multi", 1, 4, (0.09, 0.2), max_overlap=0.15)
# A touching object's centre lies this fraction of the two circumradii from its neighbour's.
TOUCHING_DISTANCE = (0.7, 1.0)


@dataclass(frozen=True)
class Scene:
    """One rendered scene and all its labels.

    image: (H, W, 3) uint8 RGB.
    mask: (H, W) uint8, 0 = background, 1 + class index (as `SEGMENTATION_CLASSES`).
    instances: (H, W) uint8, 0 = background, 1 + index of the object in the scene.
    boxes: (k, 4) float32 xyxy pixel boxes, one per object.
    labels: (k,) int64 class indices into `SHAPE_CLASSES`, one per object.
    """

    image: np.ndarray
    mask: np.ndarray
    instances: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Scenes:
    """A batch of scenes: the `Scene` fields stacked (images, masks, instances: (N, ...)), boxes
    and labels as one array per scene (their lengths differ)."""

    images: np.ndarray
    masks: np.ndarray
    instances: np.ndarray
    boxes: list[np.ndarray]
    labels: list[np.ndarray]


def _regular_polygon(sides: int) -> np.ndarray:
    angles = np.pi / 2 + np.arange(sides) * 2 * np.pi / sides
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int, inner_radius: float) -> np.ndarray:
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner_radius)
    return _regular_polygon(2 * points) * radii[:, None]


# Outlines with circumradius 1 around the origin; circles and ellipses are fine polygons, so
# every shape goes through the same drawing path.
UNIT_OUTLINES: dict[str, np.ndarray] = {
    "circle": _regular_polygon(64),
    "square": _regular_polygon(4),
    "triangle": _regular_polygon(3),
    "star": _star(5, STAR_INNER_RADIUS),
    "ellipse": _regular_polygon(64),
    "hexagon": _regular_polygon(6),
}


def shape_outline(label: int, centre: np.ndarray, radius: float, angle: float, aspect: float) -> np.ndarray:
    """Polygon (V, 2) in pixel coordinates of shape class `label`: circumradius `radius`, rotated
    by `angle` radians about `centre`; `aspect` squashes the minor axis (ellipses only)."""
    name = SHAPE_CLASSES[label]
    outline = UNIT_OUTLINES[name] * radius
    if name == "ellipse":
        outline = outline * np.array([1.0, aspect])
    cos, sin = np.cos(angle), np.sin(angle)
    return outline @ np.array([[cos, sin], [-sin, cos]]) + centre


def pixel_window(outline: np.ndarray, size: int) -> tuple[slice, slice]:
    """(rows, cols) slices of the pixels of a size x size image that the polygon may touch."""
    x0, y0 = np.floor(outline.min(axis=0)).astype(int).clip(0, size)
    x1, y1 = np.ceil(outline.max(axis=0)).astype(int).clip(0, size)
    return slice(y0, y1), slice(x0, x1)


def silhouette_coverage(outline: np.ndarray, size: int) -> np.ndarray:
    """Fraction (size, size) float32 in [0, 1] of each pixel covered by the polygon `outline`."""
    rows, cols = pixel_window(outline, size)
    coverage = np.zeros((size, size), np.float32)
    height, width = rows.stop - rows.start, cols.stop - cols.start
    if height <= 0 or width <= 0:
        return coverage
    canvas = Image.new("L", (width * SUPERSAMPLE, height * SUPERSAMPLE), 0)
    # PIL fills supersampled pixel k when the polygon covers the point k, i.e. its centre k + 0.5.
    vertices = (outline - (cols.start, rows.start)) * SUPERSAMPLE - 0.5
    ImageDraw.Draw(canvas).polygon([tuple(v) for v in vertices], fill=255)
    coverage[rows, cols] = np.asarray(canvas.reduce(SUPERSAMPLE), np.float32) / 255
    return coverage


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(size, size, 3) float32 background and its end colours (2, 3): solid half the time,
    otherwise a linear gradient in a random direction."""
    ends = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    if rng.random() < 0.5:
        ends[1] = ends[0]
    direction = np.float32(rng.uniform(0, 2 * np.pi))
    coords = np.arange(size, dtype=np.float32) + 0.5
    along = np.cos(direction) * coords[None, :] + np.sin(direction) * coords[:, None]
    t = (along - along.min()) / (along.max() - along.min())
    return ends[0] + t[..., None] * (ends[1] - ends[0]), ends


def _distance_to_segment(colours: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance of each colour (M, 3) to the colour segment [a, b]."""
    span = b - a
    length2 = float(span @ span)
    t = np.zeros(len(colours)) if length2 == 0 else ((colours - a) @ span / length2).clip(0, 1)
    return np.linalg.norm(colours - (a + t[:, None] * span), axis=1)


def contrasting_colour(rng: np.random.Generator, background_ends: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """A random RGB colour far from every colour of the background gradient and from `others`."""
    while True:
        candidates = rng.uniform(0, 255, (32, 3))
        ok = _distance_to_segment(candidates, *background_ends) >= MIN_BACKGROUND_CONTRAST
        for other in others:
            ok &= np.linalg.norm(candidates - other, axis=1) >= MIN_OBJECT_CONTRAST
        if ok.any():
            return candidates[int(ok.argmax())]


def _overlaps_too_much(new: np.ndarray, placed: list[np.ndarray], max_overlap: float) -> bool:
    for old in placed:
        shared = np.count_nonzero(new & old)
        if shared > max_overlap * min(np.count_nonzero(new), np.count_nonzero(old)):
            return True
    return False


@dataclass(frozen=True)
class Placement:
    outline: np.ndarray
    coverage: np.ndarray
    centre: np.ndarray
    radius: float


def _centre(rng: np.random.Generator, radius: float, size: int, neighbour: Placement | None) -> np.ndarray:
    """A centre that keeps the shape inside the image: against `neighbour` when one is given and
    such a centre fits, else anywhere."""
    if neighbour is not None:
        angle = rng.uniform(0, 2 * np.pi)
        distance = rng.uniform(*TOUCHING_DISTANCE) * (radius + neighbour.radius)
        centre = neighbour.centre + distance * np.array([np.cos(angle), np.sin(angle)])
        if (centre >= radius + 1).all() and (centre <= size - radius - 1).all():
            return centre
    return rng.uniform(radius + 1, size - radius - 1, 2)


def _place_shape(
    rng: np.random.Generator,
    label: int,
    layout: SceneLayout,
    size: int,
    placed: list[np.ndarray],
    neighbour: Placement | None = None,
) -> Placement | None:
    """Shape `label` at a random pose inside the image (against `neighbour` when given) that
    overlaps the `placed` silhouettes at most `layout.max_overlap`; None when no such pose was
    found."""
    for _ in range(PLACEMENT_ATTEMPTS):
        radius = rng.uniform(*layout.radius) * size
        centre = _centre(rng, radius, size, neighbour)
        angle, aspect = rng.uniform(0, 2 * np.pi), rng.uniform(*ELLIPSE_ASPECT)
        outline = shape_outline(label, centre, radius, angle, aspect)
        coverage = silhouette_coverage(outline, size)
        if not _overlaps_too_much(coverage >= 0.5, placed, layout.max_overlap):
            return Placement(outline, coverage, centre, radius)
    return None


def _classes(rng: np.random.Generator, layout: SceneLayout, first_label: int) -> list[int]:
    count = int(rng.integers(layout.min_objects, layout.max_objects + 1))
    wanted = [first_label, *(int(label) for label in rng.integers(0, len(SHAPE_CLASSES), count - 1))]
    if layout.same_class > 0:
        for index in range(1, count):
            if rng.random() < layout.same_class:
                wanted[index] = wanted[index - 1]
    return wanted


def render_scene(rng: np.random.Generator, layout: SceneLayout, size: int, first_label: int) -> Scene:
    """One size x size scene drawn from `rng`. The first object has class `first_label` (so
    callers can balance classes), the others random classes."""
    image, background_ends = _background(rng, size)
    silhouettes, colours, labels = [], [], []
    previous: Placement | None = None
    for label in _classes(rng, layout, first_label):
        neighbour = previous if layout.touching > 0 and rng.random() < layout.touching else None
        placement = _place_shape(rng, label, layout, size, silhouettes, neighbour)
        if placement is None:
            continue
        window = pixel_window(placement.outline, size)
        colour = contrasting_colour(rng, background_ends, colours).astype(np.float32)
        image[window] += placement.coverage[window][..., None] * (colour - image[window])
        silhouettes.append(placement.coverage >= 0.5)
        colours.append(colour)
        labels.append(label)
        previous = placement
    amplitude = np.float32(rng.uniform(0, MAX_NOISE_AMPLITUDE))
    # Grey (channel-shared) noise: as good a nuisance as colour noise, at a third of the draws.
    image += (rng.random((size, size, 1), dtype=np.float32) - np.float32(0.5)) * (2 * amplitude)
    instances = np.zeros((size, size), np.uint8)
    for index, silhouette in enumerate(silhouettes):
        instances[silhouette] = index + 1
    mask_value_of_instance = np.array([0, *(label + 1 for label in labels)], np.uint8)
    return Scene(
        image=np.rint(image).clip(0, 255).astype(np.uint8),
        mask=mask_value_of_instance[instances],
        instances=instances,
        boxes=np.stack([tight_box(s) for s in silhouettes]),
        labels=np.array(labels, np.int64),
    )


def render_scenes(num_samples: int, size: int, layout: SceneLayout, seed: int, split: Split) -> Scenes:
    """`num_samples` scenes of `size` x `size` pixels, deterministic by (seed, split, index);
    scene i's first object has class i mod the number of classes, so classes stay balanced."""
    scenes = Scenes(
        images=np.empty((num_samples, size, size, 3), np.uint8),
        masks=np.empty((num_samples, size, size), np.uint8),
        instances=np.empty((num_samples, size, size), np.uint8),
        boxes=[],
        labels=[],
    )
    for index in range(num_samples):
        rng = sample_rng(seed, split, f"shapes-2d/{layout.name}", index)
        scene = render_scene(rng, layout, size, index % len(SHAPE_CLASSES))
        scenes.images[index] = scene.image
        scenes.masks[index] = scene.mask
        scenes.instances[index] = scene.instances
        scenes.boxes.append(scene.boxes)
        scenes.labels.append(scene.labels)
    return scenes
