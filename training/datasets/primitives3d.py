"""Generated 3-D primitives sampled as point clouds, every point labelled with its part.

A primitive is a list of surface pieces in an object frame (z up, extent about [-1, 1]); each
piece belongs to one part of `PRIMITIVE_PARTS` (a cube face by its normal, a torus band by its
side of the tube's centre circle, ...), so a point's part is the piece it was sampled on. Points
are spread uniformly by area; then the object is scaled per axis (mild anisotropy), rotated about
z only (top and bottom keep their meaning), jittered and normalised (`normalize_cloud`).
Every cloud comes from its own random stream, so clouds are deterministic by (seed, split, index).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from easerve.model_defs.labels import PRIMITIVE_CLASSES, PRIMITIVE_PARTS
from easerve.training.datasets.canonical import Split
from easerve.training.datasets.point_clouds import normalize_cloud
from easerve.training.datasets.streams import sample_rng

SCALE_RANGE = (0.75, 1.25)
TORUS_TUBE_RADIUS = (0.25, 0.45)
JITTER_STD = 0.01
JITTER_CLIP = 0.03
PART_INDEX = {name: index for index, name in enumerate(PRIMITIVE_PARTS)}


@dataclass(frozen=True)
class SurfacePiece:
    """A piece of a primitive's surface: its part, its area and a uniform sampler on it."""

    part: str
    area: float
    sample: Callable[[np.random.Generator, int], np.ndarray]


@dataclass(frozen=True)
class PointClouds:
    """A batch of generated clouds: points (N, P, 3) float32, labels (N,) int64 indices into
    `PRIMITIVE_CLASSES`, parts (N, P) int64 indices into `PRIMITIVE_PARTS`."""

    points: np.ndarray
    labels: np.ndarray
    parts: np.ndarray


def _parallelogram(rng: np.random.Generator, n: int, corner: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    a, b = rng.random((2, n, 1))
    return corner + a * u + b * v


def _triangle(rng: np.random.Generator, n: int, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    r1, r2 = rng.random((2, n, 1))
    root = np.sqrt(r1)  # the square root makes the barycentric draw uniform by area
    return (1 - root) * a + root * (1 - r2) * b + root * r2 * c


def _disk(rng: np.random.Generator, n: int, radius: float, z: float) -> np.ndarray:
    r = radius * np.sqrt(rng.random(n))
    theta = rng.uniform(0, 2 * np.pi, n)
    return np.stack([r * np.cos(theta), r * np.sin(theta), np.full(n, z)], axis=1)


def _tube(rng: np.random.Generator, n: int, radius: float, z0: float, z1: float) -> np.ndarray:
    theta = rng.uniform(0, 2 * np.pi, n)
    return np.stack([radius * np.cos(theta), radius * np.sin(theta), rng.uniform(z0, z1, n)], axis=1)


def _cone_side(rng: np.random.Generator, n: int, radius: float, z_base: float, z_apex: float) -> np.ndarray:
    t = np.sqrt(rng.random(n))  # fraction of the way from apex to base; area grows as t
    theta = rng.uniform(0, 2 * np.pi, n)
    ring = t * radius
    return np.stack([ring * np.cos(theta), ring * np.sin(theta), z_apex + t * (z_base - z_apex)], axis=1)


def _sphere(rng: np.random.Generator, n: int) -> np.ndarray:
    directions = rng.standard_normal((n, 3))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def _torus_band(rng: np.random.Generator, n: int, major: float, minor: float, outer: bool) -> np.ndarray:
    """Uniform on the outer (cos(phi) >= 0) or inner half of a torus around the z axis."""
    phis: list[np.ndarray] = []
    count = 0
    while count < n:
        # The area element is proportional to the distance from the axis, major + minor*cos(phi).
        phi = rng.uniform(-np.pi / 2, np.pi / 2, 2 * n) + (0 if outer else np.pi)
        keep = rng.random(2 * n) * (major + minor) < major + minor * np.cos(phi)
        phis.append(phi[keep])
        count += int(keep.sum())
    phi = np.concatenate(phis)[:n]
    theta = rng.uniform(0, 2 * np.pi, n)
    distance = major + minor * np.cos(phi)
    return np.stack([distance * np.cos(theta), distance * np.sin(theta), minor * np.sin(phi)], axis=1)


def _parallelogram_piece(part: str, corner: tuple, u: tuple, v: tuple) -> SurfacePiece:
    corner_, u_, v_ = (np.array(x, float) for x in (corner, u, v))
    area = float(np.linalg.norm(np.cross(u_, v_)))
    return SurfacePiece(part, area, partial(_parallelogram, corner=corner_, u=u_, v=v_))


def _triangle_piece(part: str, a: tuple, b: tuple, c: tuple) -> SurfacePiece:
    a_, b_, c_ = (np.array(x, float) for x in (a, b, c))
    area = float(np.linalg.norm(np.cross(b_ - a_, c_ - a_))) / 2
    return SurfacePiece(part, area, partial(_triangle, a=a_, b=b_, c=c_))


def _cube_pieces() -> list[SurfacePiece]:
    pieces = [
        _parallelogram_piece("cube/top", (-1, -1, 1), (2, 0, 0), (0, 2, 0)),
        _parallelogram_piece("cube/bottom", (-1, -1, -1), (2, 0, 0), (0, 2, 0)),
    ]
    for sign in (-1, 1):
        pieces.append(_parallelogram_piece("cube/side", (sign, -1, -1), (0, 2, 0), (0, 0, 2)))
        pieces.append(_parallelogram_piece("cube/side", (-1, sign, -1), (2, 0, 0), (0, 0, 2)))
    return pieces


def _pyramid_pieces() -> list[SurfacePiece]:
    corners = [(-1, -1, -1), (1, -1, -1), (1, 1, -1), (-1, 1, -1)]
    apex = (0, 0, 1)
    pieces = [_parallelogram_piece("pyramid/base", (-1, -1, -1), (2, 0, 0), (0, 2, 0))]
    for a, b in zip(corners, corners[1:] + corners[:1]):
        pieces.append(_triangle_piece("pyramid/side", a, b, apex))
    return pieces


def _torus_pieces(minor: float) -> list[SurfacePiece]:
    major = 1.0
    # Areas of the outer and inner halves: 2*pi*minor * (pi*major +- 2*minor).
    return [
        SurfacePiece(
            "torus/outer",
            2 * np.pi * minor * (np.pi * major + 2 * minor),
            partial(_torus_band, major=major, minor=minor, outer=True),
        ),
        SurfacePiece(
            "torus/inner",
            2 * np.pi * minor * (np.pi * major - 2 * minor),
            partial(_torus_band, major=major, minor=minor, outer=False),
        ),
    ]


def primitive_pieces(name: str, rng: np.random.Generator) -> list[SurfacePiece]:
    """The surface pieces of primitive `name` in its object frame (a torus draws its tube radius)."""
    if name == "sphere":
        return [SurfacePiece("sphere/surface", 4 * np.pi, _sphere)]
    if name == "cube":
        return _cube_pieces()
    if name == "cylinder":
        return [
            SurfacePiece("cylinder/top", np.pi, partial(_disk, radius=1.0, z=1.0)),
            SurfacePiece("cylinder/bottom", np.pi, partial(_disk, radius=1.0, z=-1.0)),
            SurfacePiece("cylinder/side", 4 * np.pi, partial(_tube, radius=1.0, z0=-1.0, z1=1.0)),
        ]
    if name == "cone":
        return [
            SurfacePiece("cone/base", np.pi, partial(_disk, radius=1.0, z=-1.0)),
            SurfacePiece(
                "cone/side",
                np.pi * np.sqrt(5),  # pi * radius * slant height
                partial(_cone_side, radius=1.0, z_base=-1.0, z_apex=1.0),
            ),
        ]
    if name == "torus":
        return _torus_pieces(rng.uniform(*TORUS_TUBE_RADIUS))
    if name == "pyramid":
        return _pyramid_pieces()
    raise ValueError(f"unknown primitive {name!r}; known: {', '.join(PRIMITIVE_CLASSES)}")


def sample_surface(
    pieces: list[SurfacePiece], num_points: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`num_points` points (P, 3) uniform by area over `pieces`, in random order, and their global
    part indices (P,)."""
    areas = np.array([piece.area for piece in pieces])
    counts = rng.multinomial(num_points, areas / areas.sum())
    points = np.concatenate([piece.sample(rng, count) for piece, count in zip(pieces, counts)])
    parts = np.repeat([PART_INDEX[piece.part] for piece in pieces], counts)
    order = rng.permutation(num_points)
    return points[order], parts[order]


def _pose(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-axis scale, a rotation about z and clipped Gaussian jitter."""
    scaled = points * rng.uniform(*SCALE_RANGE, 3)
    angle = rng.uniform(0, 2 * np.pi)
    cos, sin = np.cos(angle), np.sin(angle)
    rotated = scaled @ np.array([[cos, sin, 0], [-sin, cos, 0], [0, 0, 1]])
    return rotated + np.clip(rng.normal(0, JITTER_STD, points.shape), -JITTER_CLIP, JITTER_CLIP)


def sample_primitive(label: int, num_points: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One normalised cloud (P, 3) float32 of primitive class `label` and its part indices (P,)."""
    points, parts = sample_surface(primitive_pieces(PRIMITIVE_CLASSES[label], rng), num_points, rng)
    return normalize_cloud(_pose(points, rng)), parts


def generate_primitives(num_samples: int, num_points: int, seed: int, split: Split) -> PointClouds:
    """`num_samples` clouds of `num_points` points, deterministic by (seed, split, index);
    cloud i is of class i mod the number of classes, so classes stay balanced."""
    points = np.empty((num_samples, num_points, 3), np.float32)
    parts = np.empty((num_samples, num_points), np.int64)
    labels = np.arange(num_samples, dtype=np.int64) % len(PRIMITIVE_CLASSES)
    for index, label in enumerate(labels):
        rng = sample_rng(seed, split, "primitives-3d", index)
        points[index], parts[index] = sample_primitive(int(label), num_points, rng)
    return PointClouds(points, labels, parts)
