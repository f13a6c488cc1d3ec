"""Choice lists shared by the image operations and their node specs (torch-free, so the
specs can offer them without importing the operations)."""

from __future__ import annotations

SCALE_METHODS = ("nearest", "bilinear", "bicubic", "area", "lanczos")
CROP_MODES = ("disabled", "center")
MASK_CHANNELS = ("red", "green", "blue", "alpha")
MAX_RESOLUTION = 16384
