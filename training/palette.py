"""The colour palette shared by the generator, the captions and the checker.

The eight colours are the corners of the RGB cube, so every pair is at least
255 apart (Euclidean distance in 0..255 RGB).  That margin is what lets the
checker name colours in blurry, noisy, slightly off-hue output of a tiny
diffusion model by plain nearest-colour lookup.  Names are single words with
no synonyms so captions and prompts stay unambiguous.
"""

from __future__ import annotations

import numpy as np

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}

COLOR_NAMES: tuple[str, ...] = tuple(PALETTE)
PALETTE_ARRAY: np.ndarray = np.array(list(PALETTE.values()), dtype=np.float32)
_PALETTE_SQ_NORM = np.square(PALETTE_ARRAY).sum(axis=1)


def nearest_color_labels(pixels: np.ndarray) -> np.ndarray:
    """Index into :data:`COLOR_NAMES` of the nearest palette colour per pixel.

    ``pixels`` is ``(..., 3)`` RGB in 0..255 (any dtype); the result has the
    leading shape.  Ties (mid-grey) resolve to the first colour in palette order.
    """
    p = np.asarray(pixels, dtype=np.float32)
    # |p - c|^2 = |p|^2 - 2 p.c + |c|^2; the first term is the same for every c.
    score = p @ (-2.0 * PALETTE_ARRAY.T) + _PALETTE_SQ_NORM
    return score.argmin(axis=-1)
