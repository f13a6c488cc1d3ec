"""Deterministic generator of "one coloured shape on a plain background" samples.

Each sample is one of :data:`SHAPES` in one :data:`~training.palette.PALETTE`
colour on a background of a *different* palette colour, at a random position,
size and (for polygons) a slight rotation.  Shapes are rasterised at
:data:`SUPERSAMPLE` x resolution and box-downsampled, so edges are
anti-aliased like a real photo's instead of jagged.

Besides the RGB image and its caption a sample carries what the ControlNet
and the checker tests need, all pixel-aligned with the image:

* ``mask``: the anti-aliased object coverage (0 = background, 255 = object);
* ``edges``: Canny edges of that silhouette (0/255).  Edges are taken from
  the mask rather than the RGB image because some palette pairs (blue/black,
  red/magenta) differ little in luminance, and an edge map that depends on the
  colour pair would teach the ControlNet the wrong thing.

A canvas may be non-square (``generate(seed, size, width)``: ``size`` rows by ``width``
columns); the object's size is then drawn relative to the shorter side and its position
word names the 3x3 cell of that canvas.  Square samples are unchanged by this (same
random draws, same arithmetic).

Everything is a pure function of ``(seed, size, width)``; numpy's PCG64 stream is
stable across platforms and numpy versions, so datasets can be re-created
instead of stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
from PIL import Image, ImageDraw

from training.captions import caption_for, parse_caption, position_category, size_category
from training.geometry import SHAPES, polygon, unit_area
from training.palette import COLOR_NAMES, PALETTE

__all__ = [
    "Batch",
    "Sample",
    "batch_sample_seed",
    "caption_for",
    "compose",
    "generate",
    "generate_batch",
    "parse_caption",
    "render_mask",
    "sample_attrs",
]

SUPERSAMPLE = 4
MAX_ROTATION_DEG = 15.0
# Area-equivalent radius range (fraction of the image side).  The lower bound
# is also held at MIN_EQ_RADIUS_PX so a star's arms stay visible at 32 px.
MIN_EQ_RADIUS = 0.10
MAX_EQ_RADIUS = 0.28
MIN_EQ_RADIUS_PX = 4.5
MARGIN_PX = 1.0  # empty pixels kept between the shape and the image edge
CANNY_LOW, CANNY_HIGH = 50, 150
CIRCLE_VERTICES = 128
PIL_EDGE_BIAS = 0.3  # measured outward shift of PIL's polygon fill, in supersampled pixels


@dataclass(frozen=True)
class Sample:
    """One training example; all arrays are ``size x width`` (rows x columns) and pixel-aligned."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    caption: str
    attrs: dict
    mask: np.ndarray  # (H, W) uint8 object coverage
    edges: np.ndarray  # (H, W) uint8, 255 on the silhouette's edges


@dataclass(frozen=True)
class Batch:
    """``n`` samples stacked for training loops."""

    images: np.ndarray  # (N, H, W, 3) uint8
    captions: list[str]
    attrs: list[dict]
    masks: np.ndarray  # (N, H, W) uint8
    edges: np.ndarray  # (N, H, W) uint8


def sample_attrs(rng: np.random.Generator, size: int, width: int | None = None) -> dict:
    """Draw the geometric and colour parameters of one sample.

    Returns ``shape``, ``color``, ``background``, ``radius_px``
    (circumradius), ``center_px`` ``(x, y)`` and ``angle`` (degrees).  The
    centre is drawn so the rotated shape's bounding box keeps
    :data:`MARGIN_PX` free pixels to every image edge.  On a ``size x width`` canvas
    the radius range is relative to the shorter side.
    """
    width = size if width is None else width
    short = min(size, width)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    color_idx = int(rng.integers(len(COLOR_NAMES)))
    bg_idx = (color_idx + 1 + int(rng.integers(len(COLOR_NAMES) - 1))) % len(COLOR_NAMES)
    lo = max(MIN_EQ_RADIUS, MIN_EQ_RADIUS_PX / short)
    eq_radius = rng.uniform(lo, MAX_EQ_RADIUS) * short
    radius = eq_radius * math.sqrt(math.pi / unit_area(shape))
    angle = 0.0 if shape == "circle" else float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    if shape == "circle":
        lo_xy, hi_xy = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    else:
        verts = polygon(shape, angle)
        lo_xy, hi_xy = verts.min(axis=0), verts.max(axis=0)
    low = MARGIN_PX - lo_xy * radius
    high = np.array([width, size]) - MARGIN_PX - hi_xy * radius
    center = rng.uniform(low, np.maximum(high, low))
    return {
        "shape": shape,
        "color": COLOR_NAMES[int(color_idx)],
        "background": COLOR_NAMES[int(bg_idx)],
        "radius_px": float(radius),
        "center_px": (float(center[0]), float(center[1])),
        "angle": angle,
    }


def _outline(shape: str, angle: float) -> np.ndarray:
    """Vertices at circumradius 1; a circle becomes a 128-gon (area error 0.04 %)."""
    if shape == "circle":
        theta = np.arange(CIRCLE_VERTICES) * (2 * math.pi / CIRCLE_VERTICES)
        return np.stack([np.cos(theta), np.sin(theta)], axis=1)
    return polygon(shape, angle)


@cache
def _inradius(shape: str) -> float:
    """Distance from the centre to every edge at circumradius 1.

    Every shape here has all its edges equally far from the centre (regular
    polygons, the symmetric star), so the distance is ``2 * area / perimeter``.
    """
    v = _outline(shape, 0.0)
    x, y = v[:, 0], v[:, 1]
    area = abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2
    return float(2 * area / np.linalg.norm(v - np.roll(v, 1, axis=0), axis=1).sum())


def render_mask(shape: str, center_px: tuple[float, float], radius_px: float, angle: float, size: int,
                width: int | None = None) -> np.ndarray:
    """Anti-aliased coverage (uint8, 0..255) of a shape in a ``size x width`` image (square by default).

    Coordinates are continuous with pixel ``(i, j)`` covering ``[i, i+1) x
    [j, j+1)``; the shape is filled at :data:`SUPERSAMPLE` x and box-filtered.
    PIL fills every pixel the outline touches, which pushes each edge out by
    about :data:`PIL_EDGE_BIAS` supersampled pixels; the outline is pulled in
    by that much so the rendered area matches the geometry (within ~1 %).
    """
    s = SUPERSAMPLE
    width = size if width is None else width
    canvas = Image.new("L", (width * s, size * s), 0)
    # Moving every edge in by e shrinks the circumradius by e / inradius.
    radius = radius_px - PIL_EDGE_BIAS / s / _inradius(shape)
    verts = _outline(shape, angle) * radius + np.asarray(center_px)
    # PIL addresses pixel centres by integer coordinates, hence the -0.5.
    ImageDraw.Draw(canvas).polygon([(s * x - 0.5, s * y - 0.5) for x, y in verts], fill=255)
    # INTER_AREA with an integer factor is an exact box filter, and faster than PIL's.
    return cv2.resize(np.asarray(canvas), (width, size), interpolation=cv2.INTER_AREA)


def compose(mask: np.ndarray, color: str, background: str) -> np.ndarray:
    """Blend palette colours by the coverage ``mask`` into an RGB uint8 image."""
    return np.take(_blend_table(color, background), mask, axis=0)


@cache
def _blend_table(color: str, background: str) -> np.ndarray:
    """RGB for each of the 256 coverage levels (a lookup is ~10x faster than blending)."""
    fg = np.array(PALETTE[color], dtype=np.float64)
    bg = np.array(PALETTE[background], dtype=np.float64)
    alpha = np.arange(256, dtype=np.float64)[:, None] / 255.0
    return np.rint(bg + (fg - bg) * alpha).astype(np.uint8)


def _mask_centroid(mask: np.ndarray) -> tuple[float, float]:
    """Coverage-weighted centroid in 0..1 image coordinates (pixel centres at +0.5)."""
    h, w = mask.shape
    m = mask.astype(np.float64)
    total = m.sum()
    ys, xs = np.arange(h) + 0.5, np.arange(w) + 0.5
    return float((m.sum(axis=0) @ xs) / total / w), float((m.sum(axis=1) @ ys) / total / h)


def _sample_from_rng(rng: np.random.Generator, size: int, width: int | None = None) -> Sample:
    width = size if width is None else width
    attrs = sample_attrs(rng, size, width)
    mask = render_mask(attrs["shape"], attrs["center_px"], attrs["radius_px"], attrs["angle"], size, width)
    image = compose(mask, attrs["color"], attrs["background"])
    edges = cv2.Canny(mask, CANNY_LOW, CANNY_HIGH, L2gradient=True)
    cx, cy = _mask_centroid(mask)
    area_px = float(mask.astype(np.float64).sum() / 255.0)
    area_frac = area_px / (size * width)
    short = min(size, width)
    attrs.update(
        cx=cx,
        cy=cy,
        area_frac=area_frac,
        size=size_category(area_px / (short * short)),  # relative to the shorter side, as the radius was drawn
        position=position_category(cx, cy),
    )
    caption = caption_for(attrs, rng)
    return Sample(image=image, caption=caption, attrs=attrs, mask=mask, edges=edges)


def generate(seed: int, size: int = 64, width: int | None = None) -> Sample:
    """The sample for ``seed`` on a ``size`` (rows) x ``width`` (columns, default ``size``) canvas
    (same seed and canvas, same sample).

    ``attrs`` holds ``shape``, ``color``, ``background`` (palette names),
    ``size`` ("small"/"medium"/"large") and ``position`` (3x3 grid name), as
    used in captions, plus the exact ``cx``, ``cy`` (mask centroid, 0..1),
    ``area_frac`` (of the whole canvas), ``center_px``, ``radius_px`` (circumradius) and ``angle``.
    """
    return _sample_from_rng(np.random.default_rng(seed), size, width)


def batch_sample_seed(seed: int, index: int) -> int:
    """Seed of sample ``index`` of ``generate_batch(seed, ...)``.

    Hashing ``(seed, index)`` (instead of using ``seed + index``) keeps the
    batches of neighbouring seeds disjoint, so seed ranges can split train and
    validation data.
    """
    words = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return int(words[0]) << 31 | int(words[1]) >> 1


def generate_batch(seed: int, n: int, size: int = 64, width: int | None = None) -> Batch:
    """``n`` samples; sample ``i`` equals ``generate(batch_sample_seed(seed, i), size, width)``."""
    width = size if width is None else width
    samples = [generate(batch_sample_seed(seed, i), size, width) for i in range(n)]
    return Batch(
        images=np.stack([s.image for s in samples]) if samples else np.zeros((0, size, width, 3), np.uint8),
        captions=[s.caption for s in samples],
        attrs=[s.attrs for s in samples],
        masks=np.stack([s.mask for s in samples]) if samples else np.zeros((0, size, width), np.uint8),
        edges=np.stack([s.edges for s in samples]) if samples else np.zeros((0, size, width), np.uint8),
    )
