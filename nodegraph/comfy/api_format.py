"""Import ComfyUI's API format ("prompt"): ``{id: {"class_type": C, "inputs": {...}, "_meta": {...}}}``.

An input value that is ``[node_id, output_index]`` naming a node of the
prompt is a link; anything else is a constant.  The format has no layout, so
nodes are arranged in columns by depth (:mod:`.layout`).  Nothing here
validates against the registry: that is the validator's job after import.
"""

from __future__ import annotations

from typing import Any

from .build import Builder
from .detect import is_api_prompt
from .layout import auto_layout
from .mapping import ComfyTable
from .result import ComfyFormatError, ImportResult


def _is_link(value: Any, ids: set[str]) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and str(value[0]) in ids
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def import_api(doc: dict[str, Any], table: ComfyTable) -> ImportResult:
    """Build a graph from an API-format prompt (bare, or wrapped as ``{"prompt": {...}}``),
    mapping classes through ``table``."""
    prompt = doc.get("prompt") if isinstance(doc.get("prompt"), dict) and "class_type" not in doc else doc
    if not is_api_prompt(prompt):
        raise ComfyFormatError("not a ComfyUI API prompt: expected {node_id: {'class_type': ..., 'inputs': {...}}}")
    b = Builder("comfy_api", table)
    ids = {str(k) for k in prompt}
    links: list[tuple[str, int, str, str]] = []
    for key, node in prompt.items():
        nid, cls = str(key), node["class_type"]
        if not nid.strip():
            raise ComfyFormatError(f"a node ({cls}) has an empty id -> a node id must be a number or a non-empty "
                                   "text; the file is damaged")
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise ComfyFormatError(f"node {nid!r} ({cls}): 'inputs' must be an object")
        meta = node.get("_meta")
        title = meta.get("title") if isinstance(meta, dict) and isinstance(meta.get("title"), str) else None
        values: dict[str, Any] = {}
        for name, value in inputs.items():
            if _is_link(value, ids):
                links.append((str(value[0]), int(value[1]), nid, str(name)))
            else:
                values[str(name)] = value
        nmap = b.mapping_for(cls)
        if cls == "Reroute":
            b.add_reroute(nid, title=title)
        elif nmap is not None:
            b.add_mapped(nid, nmap, values, title=title)
        else:
            b.add_placeholder(nid, cls, values, {"class_type": cls, "inputs": inputs}, output_names=[],
                              title=title)
    for src, slot, dst, name in links:
        b.link(src, slot, dst, name)
    result = b.finish()
    auto_layout(result.graph)  # after finish(): packs' import hooks may add links
    return result
