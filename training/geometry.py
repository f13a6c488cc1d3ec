"""Exact geometry of the four shapes, shared by the renderer and the checker.

Every shape is described at *circumradius 1* centred on the origin, with
image axes (x right, y down) and rotation in degrees.  Two views of the same
definition are provided:

* :func:`polygon` gives vertices, which the generator rasterises;
* :func:`radial_extent` gives the boundary distance ``R(phi)`` along each
  direction.  All four shapes are star-shaped about their centre, so "inside"
  is simply ``rho <= R(phi)``; the checker uses this to draw thousands of
  candidate templates per second with plain numpy.

Triangle and star point up at zero rotation; the square is axis-aligned.
The area centroid of every shape is its centre (all are regular), which is
what lets the checker place templates at the observed blob's centroid.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")

# Inner/outer radius of the five-pointed star.  0.45 keeps the arms fat enough
# to survive 4x downsampling and blur at 64 px, yet clearly unlike a pentagon.
STAR_INNER_RATIO = 0.45
STAR_POINTS = 5

_POLYGON_SIDES = {"square": 4, "triangle": 3}
# Direction of the first vertex at zero rotation (radians; -pi/2 = up in image axes).
_FIRST_VERTEX = {"square": math.pi / 4, "triangle": -math.pi / 2, "star": -math.pi / 2}

# Angle after which each shape looks the same again, in degrees.
SYMMETRY_DEG: dict[str, float] = {"circle": 360.0, "square": 90.0, "triangle": 120.0, "star": 72.0}


def polygon(shape: str, angle_deg: float = 0.0) -> np.ndarray:
    """Vertices ``(K, 2)`` of ``shape`` at circumradius 1, rotated by ``angle_deg``.

    A circle has no vertices; callers draw it as an ellipse instead.
    """
    if shape == "circle":
        raise ValueError("a circle has no polygon; draw it as an ellipse")
    start = _FIRST_VERTEX[shape] + math.radians(angle_deg)
    if shape == "star":
        k = np.arange(2 * STAR_POINTS)
        radii = np.where(k % 2 == 0, 1.0, STAR_INNER_RATIO)
        theta = start + k * math.pi / STAR_POINTS
    else:
        n = _POLYGON_SIDES[shape]
        radii = np.ones(n)
        theta = start + np.arange(n) * 2 * math.pi / n
    return np.stack([radii * np.cos(theta), radii * np.sin(theta)], axis=1)


@cache
def unit_area(shape: str) -> float:
    """Area of ``shape`` at circumradius 1 (used to turn areas into radii)."""
    if shape == "circle":
        return math.pi
    v = polygon(shape)
    x, y = v[:, 0], v[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def radial_extent(shape: str, phi: np.ndarray, angle_deg: float | np.ndarray = 0.0) -> np.ndarray:
    """Distance from the centre to the boundary of ``shape`` along direction ``phi``.

    ``phi`` (radians, image axes) and ``angle_deg`` broadcast against each
    other, so passing ``angle_deg[:, None]`` evaluates many rotations at once.
    """
    phi = np.asarray(phi, dtype=np.float32)
    if shape == "circle":
        return np.ones(np.broadcast_shapes(phi.shape, np.shape(angle_deg)), dtype=np.float32)
    rot = np.deg2rad(np.asarray(angle_deg, dtype=np.float32))
    rel = phi - rot - _FIRST_VERTEX[shape]
    if shape == "star":
        period = 2 * math.pi / STAR_POINTS
        half = period / 2
        local = np.mod(rel, period)
        local = np.minimum(local, period - local)  # mirror: outer tip at 0, inner notch at half
        # Polar equation of the straight edge from (1, 0) to (STAR_INNER_RATIO, half).
        ri = STAR_INNER_RATIO
        return (ri * math.sin(half)) / (np.sin(local) + ri * np.sin(half - local))
    n = _POLYGON_SIDES[shape]
    period = 2 * math.pi / n
    local = np.mod(rel, period)
    # A regular polygon's edge is at the apothem cos(pi/n) along its normal,
    # which points half-way between two vertices.
    return math.cos(math.pi / n) / np.cos(local - math.pi / n)
