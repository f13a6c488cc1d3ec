"""Which model files an imported workflow names that are not in our model folders.

ComfyUI workflows name models relative to ComfyUI's folders; ours resolve the
same names through ``models/<kind>`` and ``extra_model_paths.yaml`` (the
loader nodes' choice lists).  This answers "what do I still need to copy?"
in one list, before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..graph import Graph
from ..registry import Registry
from ..subgraph import flatten, has_instances
from .mapping import ComfyTable


def missing_models(graph: Graph, registry: Registry,
                   settings: Mapping[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """``(node id, input, file name)`` for every model name no configured folder holds.

    Only inputs the packs' ComfyUI mappings mark as model files (``kind="model:<folder>"``)
    are checked; linked inputs and muted nodes are skipped.
    """
    out: list[tuple[str, str, str]] = []
    by_ours = ComfyTable.of(registry).by_ours
    if has_instances(graph):  # loaders inside subgraphs count too (ids are paths: "outer/inner")
        graph = flatten(graph, registry).graph
    for node in graph:
        nmap = by_ours.get(node.type)
        spec = registry.get(node.type)
        if nmap is None or spec is None or node.mode == "mute":
            continue
        for p in nmap.params:
            if p.model_folder is None or p.drop or graph.link_into(node.id, p.name) is not None:
                continue
            inp = spec.input(p.name)
            name = node.values.get(p.name, inp.default if inp is not None else None)
            if inp is None or not isinstance(name, str):
                continue
            try:
                choices = inp.choice_list(settings)
            except Exception:  # noqa: BLE001 - a broken folder config means nothing is available
                choices = []
            if name not in choices:
                out.append((node.id, p.name, name))
    return out


def describe_missing(missing: list[tuple[str, str, str]]) -> list[str]:
    """One line per missing file, for the CLI and the editor."""
    return [f"node {nid!r}: {inp} {name!r} is not in the model folders" for nid, inp, name in missing]
