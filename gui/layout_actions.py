"""Layout verbs of one canvas: Arrange (see :mod:`gui.arrange`).

Kept out of :mod:`gui.edit_actions` so the layout rules read in one place; each verb
reads sizes from the canvas items and pushes one undoable command.
"""

from __future__ import annotations

from PySide6.QtGui import QUndoStack

from . import commands as cmd
from .arrange import arrange
from .canvas import GraphScene


def arrange_nodes(scene: GraphScene, undo: QUndoStack) -> int:
    """Arrange the selection (two or more nodes), else the whole graph; one undo step.
    Returns how many nodes moved."""
    graph = scene.graph
    ids = scene.selected_node_ids()
    whole = len(ids) < 2
    if whole:
        ids = list(scene.node_items)
    sizes, positions = {}, {}
    for nid in ids:
        it = scene.node_items[nid]
        sizes[nid] = (it.layout.width, it.layout.height)
        positions[nid] = (it.pos().x(), it.pos().y())
    chosen = set(ids)
    edges = [(lk.src, lk.dst) for lk in graph.links if lk.src in chosen and lk.dst in chosen]
    groups = {gid: tuple(g.bounds) for gid, g in graph.groups.items()}
    result = arrange(ids, edges, sizes, positions, groups if whole else _groups_within(scene, chosen))
    node_moves = {nid: (positions[nid], p) for nid, p in result.positions.items()
                  if abs(positions[nid][0] - p[0]) > 0.01 or abs(positions[nid][1] - p[1]) > 0.01}
    group_moves = {gid: (tuple(graph.groups[gid].bounds), r) for gid, r in result.groups.items()
                   if tuple(graph.groups[gid].bounds) != r}
    if not node_moves and not group_moves:
        return 0
    what = "graph" if whole else f"{len(ids)} nodes"
    undo.push(cmd.MoveCommand(graph, node_moves, group_moves, text=f"Arrange {what}"))
    return len(node_moves)


def _groups_within(scene: GraphScene, chosen: set[str]) -> dict[str, tuple[float, ...]]:
    """Groups whose members are all being arranged (only those may be refitted: a group
    with an unselected member keeps its frame, and its selected members are arranged
    as loose nodes)."""
    out = {}
    for gid, gi in scene.group_items.items():
        frame = gi.sceneBoundingRect()
        members = {nid for nid, it in scene.node_items.items() if frame.contains(it.sceneBoundingRect().center())}
        if members and members <= chosen:
            out[gid] = tuple(scene.graph.groups[gid].bounds)
    return out
