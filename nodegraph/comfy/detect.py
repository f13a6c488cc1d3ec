"""Which kind of workflow document is this?  Structural checks only, no validation.

* ours: ``{"format": "nodegraph.workflow", ...}`` or the compact version-0
  form (``"nodes"`` is an object keyed by id);
* ComfyUI UI ("workflow"): ``"nodes"`` is a *list* of objects with a ``type``;
* ComfyUI API ("prompt"): every value is an object with a ``class_type``
  (possibly wrapped as ``{"prompt": {...}}``, the body ComfyUI's HTTP API takes).
"""

from __future__ import annotations

from typing import Any, Literal

Kind = Literal["nodegraph", "comfy_ui", "comfy_api"]


def detect(doc: Any) -> Kind | None:
    """The kind of ``doc`` (a parsed JSON value), or ``None`` if it is none of them."""
    if not isinstance(doc, dict):
        return None
    if doc.get("format") == "nodegraph.workflow":
        return "nodegraph"
    nodes = doc.get("nodes")
    if isinstance(nodes, list) and all(isinstance(n, dict) and "type" in n for n in nodes) and (
            "links" in doc or "last_node_id" in doc or nodes):
        return "comfy_ui"
    if isinstance(nodes, dict) and "format" not in doc:
        return "nodegraph"
    if is_api_prompt(doc) or (isinstance(doc.get("prompt"), dict) and is_api_prompt(doc["prompt"])):
        return "comfy_api"
    return None


def is_api_prompt(doc: Any) -> bool:
    """True for ``{id: {"class_type": ..., "inputs": {...}}}`` with at least one node."""
    return (isinstance(doc, dict) and bool(doc)
            and all(isinstance(v, dict) and isinstance(v.get("class_type"), str) for v in doc.values()))


def is_comfy(doc: Any) -> bool:
    """True if ``doc`` is a ComfyUI workflow in either of its formats."""
    return detect(doc) in ("comfy_ui", "comfy_api")
