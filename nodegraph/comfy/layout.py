"""Positions for nodes that come without any (ComfyUI's API format has no layout).

Columns by dependency depth, left to right, so a prompt opens in the editor
reading like a pipeline instead of as a pile of nodes at the origin.
"""

from __future__ import annotations

from ..graph import Graph

COLUMN_WIDTH = 340.0
ROW_HEIGHT = 240.0
MARGIN = 40.0


def auto_layout(graph: Graph) -> None:
    """Give every node without ``ui["pos"]`` a position: column = longest path from a source."""
    depth: dict[str, int] = {}
    indeg = {nid: 0 for nid in graph.nodes}
    children: dict[str, list[str]] = {nid: [] for nid in graph.nodes}
    for link in graph.links:
        if link.src in indeg and link.dst in indeg and link.src != link.dst:
            indeg[link.dst] += 1
            children[link.src].append(link.dst)
    ready = [nid for nid, d in indeg.items() if d == 0]
    for nid in ready:
        depth[nid] = 0
    while ready:
        nid = ready.pop()
        for child in children[nid]:
            depth[child] = max(depth.get(child, 0), depth[nid] + 1)
            indeg[child] -= 1
            if indeg[child] == 0:
                ready.append(child)
    rows: dict[int, int] = {}
    for node in graph:  # file order within a column; nodes on a cycle share column 0
        if "pos" in node.ui:
            continue
        col = depth.get(node.id, 0)
        row = rows.get(col, 0)
        rows[col] = row + 1
        node.ui["pos"] = [MARGIN + col * COLUMN_WIDTH, MARGIN + row * ROW_HEIGHT]
