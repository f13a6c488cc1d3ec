"""Caption templates, the attribute vocabulary, and a parser for prompts.

Captions are built from a handful of templates so the text encoder sees
varied word order ("a red circle on a blue background", "a blue background
with a red circle", ...) while every caption stays machine-readable:
:func:`parse_caption` recovers exactly the attributes a caption mentions.
Size and position words appear only in a fraction of captions, so a model
also learns to draw an object when they are left out.

Size and position are *categories* computed from the rendered object:

* size from the area-equivalent radius ``sqrt(area_frac / pi)`` (so a star
  and a circle called "small" cover similar areas): below
  :data:`SMALL_BELOW` is "small", above :data:`LARGE_ABOVE` is "large";
  "medium" is never written in captions;
* position from the object's centroid in a 3x3 grid of the image.
"""

from __future__ import annotations

import math
import re

import numpy as np

from training.palette import COLOR_NAMES

SIZES: tuple[str, ...] = ("small", "medium", "large")
SMALL_BELOW = 0.16
LARGE_ABOVE = 0.22

POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip

# How each position is written in captions (the parser also accepts variants).
POSITION_PHRASES: dict[str, str] = {
    "top left": "in the top left",
    "top": "at the top",
    "top right": "in the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "in the bottom left",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right",
}

# ``{obj}`` = "[size ]colour shape", ``{pos}`` = " <position phrase>" or "".
TEMPLATES: tuple[str, ...] = (
    "a {obj}{pos} on a {bg} background",
    "a {obj} on a {bg} background{pos}",
    "a {bg} background with a {obj}{pos}",
    "{obj}{pos}, {bg} background",
    "a picture of a {obj}{pos} against a {bg} background",
    "a {obj}{pos} on {bg}",
)

SIZE_WORD_PROB = 0.5
POSITION_WORD_PROB = 0.5

_SIZE_SYNONYMS = {"small": "small", "tiny": "small", "little": "small", "large": "large", "big": "large",
                  "huge": "large", "medium": "medium"}  # fmt: skip
_SHAPE_SYNONYMS = {"circle": "circle", "disc": "circle", "disk": "circle", "square": "square",
                   "triangle": "triangle", "star": "star"}  # fmt: skip
_VERTICAL = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
_HORIZONTAL = {"left": "left", "right": "right"}
_CENTER = {"center", "centre", "middle"}


def size_category(area_frac: float) -> str:
    """Size word ("small", "medium" or "large") for an object covering ``area_frac`` of the image."""
    eq_radius = math.sqrt(max(area_frac, 0.0) / math.pi)
    if eq_radius < SMALL_BELOW:
        return "small"
    if eq_radius > LARGE_ABOVE:
        return "large"
    return "medium"


def position_category(cx: float, cy: float) -> str:
    """Name of the 3x3 grid cell holding the point ``(cx, cy)`` (both in 0..1)."""
    col = min(int(cx * 3), 2) if cx >= 0 else 0
    row = min(int(cy * 3), 2) if cy >= 0 else 0
    return POSITIONS[3 * row + col]


def position_region(position: str) -> tuple[float, float, float, float]:
    """The ``(x0, y0, x1, y1)`` cell of the image a position word refers to."""
    idx = POSITIONS.index(position)
    row, col = divmod(idx, 3)
    return col / 3, row / 3, (col + 1) / 3, (row + 1) / 3


def caption_for(
    attrs: dict,
    rng: np.random.Generator,
    *,
    template: int | None = None,
    with_size: bool | None = None,
    with_position: bool | None = None,
) -> str:
    """Write a caption for ``attrs`` (keys ``shape``, ``color``, ``background``,
    optionally ``size`` and ``position``).

    Unforced choices are drawn from ``rng``: the template, whether the size
    word is included (never for "medium") and whether the position phrase is.
    """
    if template is None:
        template = int(rng.integers(len(TEMPLATES)))
    size = attrs.get("size")
    if with_size is None:
        with_size = bool(rng.random() < SIZE_WORD_PROB)
    if with_position is None:
        with_position = bool(rng.random() < POSITION_WORD_PROB)
    obj = f"{attrs['color']} {attrs['shape']}"
    if with_size and size in ("small", "large"):
        obj = f"{size} {obj}"
    pos = ""
    if with_position and attrs.get("position") is not None:
        pos = " " + POSITION_PHRASES[attrs["position"]]
    return TEMPLATES[template].format(obj=obj, bg=attrs["background"], pos=pos)


def parse_caption(text: str) -> dict:
    """Attributes a caption or user prompt mentions.

    Returns a dict with any of ``color``, ``shape``, ``background``, ``size``
    and ``position``; keys the text does not mention are absent.  The object
    colour is the colour word right before the shape word (a size word may sit
    in between, as in "red small star"); the background colour is the one
    followed by "background", or else any other colour word ("... on blue").
    """
    tokens = re.findall(r"[a-z]+", text.lower())
    out: dict = {}
    shape_at = next((i for i, t in enumerate(tokens) if t in _SHAPE_SYNONYMS), None)
    if shape_at is not None:
        out["shape"] = _SHAPE_SYNONYMS[tokens[shape_at]]
    color_at = [i for i, t in enumerate(tokens) if t in COLOR_NAMES]
    obj_at = None
    if shape_at is not None:
        for back in (1, 2):
            j = shape_at - back
            if j >= 0 and tokens[j] in COLOR_NAMES:
                obj_at = j
                break
            if j < 0 or tokens[j] not in _SIZE_SYNONYMS:
                break
    bg_at = next((i for i in color_at if i + 1 < len(tokens) and tokens[i + 1] == "background"), None)
    if bg_at is None:
        bg_at = next((i for i in color_at if i != obj_at), None)
    if obj_at is None:
        obj_at = next((i for i in color_at if i != bg_at), None)
    if obj_at is not None:
        out["color"] = tokens[obj_at]
    if bg_at is not None:
        out["background"] = tokens[bg_at]
    sizes = [_SIZE_SYNONYMS[t] for t in tokens if t in _SIZE_SYNONYMS]
    if sizes:
        out["size"] = sizes[0]
    vertical = next((_VERTICAL[t] for t in tokens if t in _VERTICAL), None)
    horizontal = next((_HORIZONTAL[t] for t in tokens if t in _HORIZONTAL), None)
    if vertical and horizontal:
        out["position"] = f"{vertical} {horizontal}"
    elif vertical or horizontal:
        out["position"] = vertical or horizontal
    elif any(t in _CENTER for t in tokens):
        out["position"] = "center"
    return out
