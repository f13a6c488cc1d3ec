"""Primitive node pack: constants, arithmetic, text, and text output.

Needs no torch, so the engine, its tests and its benchmarks run on it alone.
Registered through the ``nodegraph.nodes`` entry point like any other pack.
"""

from __future__ import annotations

from nodegraph.registry import Registry

from .comfy import COMFY
from .nodes import NODES


def register(registry: Registry) -> None:
    registry.add_pack("primitives", NODES, comfy=COMFY)


__all__ = ["NODES", "register"]
