"""Upscale node pack (``upscale.*``): spandrel super-resolution models with seam-free tiling.

``tiled`` holds the model-agnostic tiling, ``model`` the safe loading and
spandrel detection, ``nodes`` the specs (torch-free at import).  Model files
live in ``<models_dir>/upscale_models`` (see ``nodes.shared.model_paths``).
"""

from __future__ import annotations

from nodegraph.registry import Registry

from .comfy import COMFY
from .nodes import NODES


def register(registry: Registry) -> None:
    registry.add_pack("upscale", NODES, comfy=COMFY)


__all__ = ["NODES", "register"]
