"""Shared helpers for the ComfyUI import/export tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nodegraph import Graph, Registry
from nodegraph.spec import coerce_value

FIXTURES = Path(__file__).parent / "fixtures"
NO_MODELS = {"include_demo_models": False}


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def full_registry() -> Registry:
    """Every pack shipped with nodegraph (the importer maps onto diffusion, image, upscale, primitives)."""
    from nodes.diffusion.pack import register as diffusion
    from nodes.image import register as image
    from nodes.primitives import register as primitives
    from nodes.upscale import register as upscale

    reg = Registry()
    for register in (primitives, diffusion, image, upscale):
        reg.load_pack(register)
    return reg


def semantics(graph: Graph, registry: Registry) -> tuple[dict[str, Any], set[tuple[str, str, str, str]]]:
    """What a graph computes, independent of layout: per node its type, mode and every widget value
    (defaults filled in, coerced to the declared type, so 8 == 8.0), plus the set of links."""
    nodes: dict[str, Any] = {}
    for n in graph:
        spec = registry.get(n.type)
        if spec is None:
            nodes[n.id] = (n.type, n.mode, tuple(sorted(n.values.items())))
            continue
        values = {}
        for inp in spec.inputs:
            if inp.has_widget and graph.link_into(n.id, inp.name) is None:
                raw = n.values.get(inp.name, inp.default)
                values[inp.name] = coerce_value(inp, raw) if raw is not None else None
        nodes[n.id] = (n.type, n.mode, tuple(sorted(values.items())))
    links = {(lk.src, lk.src_output, lk.dst, lk.dst_input) for lk in graph.links}
    return nodes, links
