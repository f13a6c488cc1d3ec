"""Image node pack (``image.*``): load/save/preview, resize, crop, pad, composite, masks, Canny.

The pixel code (``ops``, ``files``) needs torch, Pillow and OpenCV; the node
specs in ``nodes`` import it only when a node runs, so importing this package,
listing its nodes and validating workflows never import torch.
``png_meta.read_png_workflow`` (the engine's reader, re-exported) recovers the workflow saved
inside a PNG; ``comfy`` says how the nodes correspond to ComfyUI classes.
"""

from __future__ import annotations

from nodegraph.registry import Registry

from .comfy import COMFY
from .nodes import NODES


def register(registry: Registry) -> None:
    registry.add_pack("image", NODES, comfy=COMFY)


__all__ = ["NODES", "register"]
