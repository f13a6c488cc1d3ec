"""Node and group colours, snap to grid, and paste with links (Ctrl+Shift+V).

Small editing verbs that each push one undoable command; kept out of
:mod:`gui.edit_actions` so they read together and merge cleanly.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPointF

from . import commands as cmd
from .canvas import GraphScene

# ComfyUI's node colour names, so imported colours and ours look alike.
NODE_COLORS: dict[str, str | None] = {
    "No colour": None, "Red": "#553333", "Brown": "#593930", "Green": "#335533", "Blue": "#334466",
    "Pale blue": "#3f5159", "Cyan": "#335555", "Purple": "#553355", "Yellow": "#665533", "Black": "#222222",
}
GRID = 24.0  # the canvas grid's minor step (GraphView._draw_grid)


def set_color(scene: GraphScene, undo: Any, color: str | None) -> int:
    """Colour the selected nodes' title bars and the selected groups; one undo step."""
    ids = scene.selected_node_ids()
    groups = scene.selected_group_ids()
    if not ids and not groups:
        return 0
    undo.beginMacro("Colour" if color else "Remove colour")
    for nid in ids:
        undo.push(cmd.SetUiCommand(scene.graph, nid, "color", color, "Colour"))
    for gid in groups:
        undo.push(cmd.UpdateGroupCommand(scene.graph, gid, color=color))
    undo.endMacro()
    return len(ids) + len(groups)


def add_input_links(doc: dict[str, Any], graph: Any, ids: list[str]) -> dict[str, Any]:
    """Record, beside a copied fragment, the wires that fed it from outside the copy:
    Ctrl+Shift+V re-creates them (a plain paste ignores the key)."""
    keep = set(ids)
    doc["input_links"] = [{"from": [lk.src, lk.src_output], "to": [lk.dst, lk.dst_input]}
                          for nid in ids if nid in graph.nodes
                          for lk in graph.inputs_view(nid).values() if lk.src not in keep]
    return doc


def paste_with_links(edits: Any, doc: dict[str, Any] | None, at: QPointF | None = None) -> list[str]:
    """Paste, then wire the pasted nodes' inputs to the same outside nodes as the
    originals (those that still exist, through outputs that still exist); one undo step."""
    if not doc or not doc.get("nodes"):
        return []
    undo, graph = edits.undo, edits.graph
    undo.beginMacro("Paste with links")
    ids = edits.paste(doc, at)
    new_ids = dict(zip(doc["nodes"], ids, strict=False))
    for lk in doc.get("input_links", []):
        (src, out), (dst, inp) = lk["from"], lk["to"]
        if src in graph.nodes and dst in new_ids and edits.scene.output_type(src, out) is not None:
            undo.push(cmd.ConnectCommand(graph, src, out, new_ids[dst], inp))
    undo.endMacro()
    return ids
