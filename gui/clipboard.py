"""Copy/paste as workflow JSON on the system clipboard.

The copied text is an ordinary (partial) workflow document, so it pastes
between windows, between sessions and into a text editor; any workflow JSON
copied from elsewhere pastes too.  Only links *between* copied nodes travel.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from PySide6.QtCore import QMimeData
from PySide6.QtGui import QGuiApplication

from nodegraph import Graph
from nodegraph.workflow import CURRENT_VERSION, FORMAT, migrate

MIME = "application/x-nodegraph-workflow"


def fragment(graph: Graph, node_ids: Iterable[str], group_ids: Iterable[str] = ()) -> dict[str, Any]:
    """A workflow document holding the given nodes, the links among them and the groups."""
    ids = [n for n in node_ids if n in graph.nodes]
    keep = set(ids)
    nodes: dict[str, Any] = {}
    for nid in ids:
        n = graph.nodes[nid]
        d: dict[str, Any] = {"type": n.type, "values": dict(n.values), "ui": json.loads(json.dumps(n.ui))}
        if n.mode != "normal":
            d["mode"] = n.mode
        if n.title is not None:
            d["title"] = n.title
        nodes[nid] = d
    links = [{"from": [lk.src, lk.src_output], "to": [lk.dst, lk.dst_input]}
             for nid in ids for lk in graph.inputs_view(nid).values() if lk.src in keep]
    groups = [{"id": g.id, "title": g.title, "bounds": list(g.bounds), **({"color": g.color} if g.color else {})}
              for gid in group_ids if (g := graph.groups.get(gid)) is not None]
    doc: dict[str, Any] = {"format": FORMAT, "version": CURRENT_VERSION, "nodes": nodes, "links": links}
    if groups:
        doc["groups"] = groups
    return doc


def fragment_origin(doc: dict[str, Any]) -> tuple[float, float]:
    """Top-left of the copied nodes (so a paste lands where the user points)."""
    xs, ys = [], []
    for n in doc.get("nodes", {}).values():
        pos = (n.get("ui") or {}).get("pos")
        if pos:
            xs.append(float(pos[0]))
            ys.append(float(pos[1]))
    return (min(xs), min(ys)) if xs else (0.0, 0.0)


def copy_to_clipboard(doc: dict[str, Any]) -> None:
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    md = QMimeData()
    md.setData(MIME, text.encode("utf-8"))
    md.setText(text)
    QGuiApplication.clipboard().setMimeData(md)


def parse(text: str) -> dict[str, Any] | None:
    """A workflow document from clipboard text, or None if it is not one."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), dict):
        return None
    try:
        doc = migrate(doc)
    except Exception:
        return None
    for n in doc["nodes"].values():
        if not isinstance(n, dict) or not isinstance(n.get("type"), str):
            return None
    return doc


def read_clipboard() -> dict[str, Any] | None:
    md = QGuiApplication.clipboard().mimeData()
    if md is None:
        return None
    if md.hasFormat(MIME):
        return parse(bytes(md.data(MIME).data()).decode("utf-8", "replace"))
    if md.hasText():
        return parse(md.text())
    return None
