"""Undoable edits.  Every command changes the :class:`~nodegraph.Graph` through
its methods and nothing else: the canvas redraws from the graph's change
notifications, so undo/redo can never leave the picture and the model out of
step (the items are a view; the stack drives the model)."""

from __future__ import annotations

import copy
from typing import Any

from PySide6.QtGui import QUndoCommand

from nodegraph import Graph, Link, Node

_MERGE_VALUE = 1001
_MERGE_MOVE = 1002


# type id -> display name, filled from every registry a canvas shows (see GraphScene):
# undo entries name nodes as the user sees them ("Set KSampler.seed"), not by id.
_DISPLAY_NAMES: dict[str, str] = {}


def learn_display_names(names: dict[str, str]) -> None:
    """Remember the display names of a registry's node types (same type id, same name)."""
    _DISPLAY_NAMES.update(names)


def node_label(graph: Graph, node_id: str) -> str:
    """What the user calls a node: its title, else its type's display name."""
    node = graph.nodes.get(node_id)
    if node is None:
        return node_id
    return node.title or _DISPLAY_NAMES.get(node.type) or node.type


def tidy(v: float) -> float | int:
    """Positions as written to files: whole numbers stay ints (``[640, 0]``, not ``[640.0, 0.0]``)."""
    f = round(float(v), 2)
    return int(f) if f.is_integer() else f


class AddNodeCommand(QUndoCommand):
    """Add one node (the node object is kept so redo re-inserts the same id)."""

    def __init__(self, graph: Graph, type_id: str, *, values: dict[str, Any] | None = None,
                 ui: dict[str, Any] | None = None, node_id: str | None = None, title: str | None = None,
                 mode: str = "normal", text: str = "") -> None:
        super().__init__(text or f"Add {_DISPLAY_NAMES.get(type_id, type_id)}")
        self.graph = graph
        nid = node_id if node_id is not None and node_id not in graph.nodes else graph.new_id()
        self.node = Node(nid, type_id, dict(values or {}), mode, title, dict(ui or {}))

    @property
    def node_id(self) -> str:
        return self.node.id

    def redo(self) -> None:
        self.graph.insert_node(self.node)

    def undo(self) -> None:
        self.graph.remove_node(self.node.id)


class RemoveNodesCommand(QUndoCommand):
    """Remove nodes and every link touching them; undo puts back both."""

    def __init__(self, graph: Graph, node_ids: list[str], text: str = "") -> None:
        super().__init__(text or f"Delete {len(node_ids)} node(s)")
        self.graph = graph
        self.ids = [n for n in node_ids if n in graph.nodes]
        self._removed: list[tuple[Node, list[Link]]] = []

    def redo(self) -> None:
        self._removed = [self.graph.remove_node(nid) for nid in self.ids]

    def undo(self) -> None:
        for node, _ in self._removed:
            self.graph.insert_node(node)
        seen: set[tuple[str, str]] = set()
        for _, links in self._removed:
            for lk in links:
                if (lk.dst, lk.dst_input) in seen:
                    continue
                seen.add((lk.dst, lk.dst_input))
                self.graph.connect(lk.src, lk.src_output, lk.dst, lk.dst_input, extra=lk.extra)
        self._removed = []


class ConnectCommand(QUndoCommand):
    """Link an output to an input (replacing and remembering what fed it before)."""

    def __init__(self, graph: Graph, src: str, src_output: str, dst: str, dst_input: str) -> None:
        super().__init__(f"Connect {node_label(graph, src)}.{src_output} → {node_label(graph, dst)}.{dst_input}")
        self.graph = graph
        self.args = (src, src_output, dst, dst_input)
        self._old: Link | None = None

    def redo(self) -> None:
        self._old = self.graph.link_into(self.args[2], self.args[3])
        self.graph.connect(*self.args)

    def undo(self) -> None:
        self.graph.disconnect(self.args[2], self.args[3])
        if self._old is not None:
            o = self._old
            self.graph.connect(o.src, o.src_output, o.dst, o.dst_input, extra=o.extra)


class DisconnectCommand(QUndoCommand):
    def __init__(self, graph: Graph, dst: str, dst_input: str) -> None:
        super().__init__(f"Disconnect {node_label(graph, dst)}.{dst_input}")
        self.graph = graph
        self.dst, self.dst_input = dst, dst_input
        self._old: Link | None = None

    def redo(self) -> None:
        self._old = self.graph.disconnect(self.dst, self.dst_input)

    def undo(self) -> None:
        if self._old is not None:
            o = self._old
            self.graph.connect(o.src, o.src_output, o.dst, o.dst_input, extra=o.extra)


class SetValueCommand(QUndoCommand):
    """Change one constant.  Consecutive changes of the same input merge into one
    undo step, so clicking a spin arrow ten times is undone at once."""

    def __init__(self, graph: Graph, node_id: str, name: str, value: Any, *, merge: bool = True) -> None:
        super().__init__(f"Set {node_label(graph, node_id)}.{name}")
        self.graph = graph
        self.node_id, self.name = node_id, name
        node = graph.node(node_id)
        self.had_old = name in node.values
        self.old = node.values.get(name)
        self.new = value
        self._merge = merge

    def id(self) -> int:  # noqa: A003 - Qt API name
        return _MERGE_VALUE if self._merge else -1

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802 - Qt API name
        if not isinstance(other, SetValueCommand) or (other.node_id, other.name) != (self.node_id, self.name) \
                or other.graph is not self.graph:  # same id inside a subgraph is another node
            return False
        self.new = other.new
        return True

    def redo(self) -> None:
        self.graph.set_value(self.node_id, self.name, self.new)

    def undo(self) -> None:
        if self.had_old:
            self.graph.set_value(self.node_id, self.name, self.old)
        else:
            self.graph.unset_value(self.node_id, self.name)


class SetModeCommand(QUndoCommand):
    """Set bypass/mute/normal on several nodes at once."""

    def __init__(self, graph: Graph, node_ids: list[str], mode: str) -> None:
        super().__init__(f"Set mode {mode}")
        self.graph = graph
        self.new = mode
        self.old = {nid: graph.node(nid).mode for nid in node_ids}

    def redo(self) -> None:
        for nid in self.old:
            self.graph.set_mode(nid, self.new)

    def undo(self) -> None:
        for nid, mode in self.old.items():
            self.graph.set_mode(nid, mode)


class SetUiCommand(QUndoCommand):
    """Change an editor-only field of a node (collapsed, seed control, colour, size)."""

    def __init__(self, graph: Graph, node_id: str, key: str, value: Any, text: str = "") -> None:
        super().__init__(text or f"Set {key} of {node_label(graph, node_id)}")
        self.graph = graph
        self.node_id, self.key = node_id, key
        self.old = copy.deepcopy(graph.node(node_id).ui.get(key))
        self.new = value

    def redo(self) -> None:
        self.graph.set_ui(self.node_id, self.key, copy.deepcopy(self.new))

    def undo(self) -> None:
        if self.old is None:
            node = self.graph.node(self.node_id)
            node.ui.pop(self.key, None)
            self.graph.set_ui(self.node_id, self.key, None)
            node.ui.pop(self.key, None)
        else:
            self.graph.set_ui(self.node_id, self.key, copy.deepcopy(self.old))


class SetTitleCommand(QUndoCommand):
    def __init__(self, graph: Graph, node_id: str, title: str | None) -> None:
        super().__init__("Rename node")
        self.graph, self.node_id = graph, node_id
        self.old, self.new = graph.node(node_id).title, title

    def redo(self) -> None:
        self.graph.set_title(self.node_id, self.new)

    def undo(self) -> None:
        self.graph.set_title(self.node_id, self.old)


class MoveCommand(QUndoCommand):
    """Move nodes (``ui["pos"]``) and groups (their bounds) together."""

    def __init__(self, graph: Graph, node_moves: dict[str, tuple[tuple[float, float], tuple[float, float]]],
                 group_moves: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] | None = None,
                 text: str = "Move") -> None:
        super().__init__(text)
        self.graph = graph
        self.node_moves = node_moves
        self.group_moves = group_moves or {}

    def _apply(self, index: int) -> None:
        for nid, pair in self.node_moves.items():
            if nid in self.graph.nodes:
                self.graph.set_ui(nid, "pos", [tidy(pair[index][0]), tidy(pair[index][1])])
        for gid, pair in self.group_moves.items():
            if gid in self.graph.groups:
                self.graph.update_group(gid, bounds=tuple(pair[index]))

    def redo(self) -> None:
        self._apply(1)

    def undo(self) -> None:
        self._apply(0)


class AddGroupCommand(QUndoCommand):
    def __init__(self, graph: Graph, title: str, bounds: tuple[float, float, float, float],
                 color: str | None = None, group_id: str | None = None) -> None:
        super().__init__("Add group")
        self.graph = graph
        self.gid = group_id if group_id and group_id not in graph.groups else f"g{graph.new_id()}"
        self.title, self.bounds, self.color = title, bounds, color

    def redo(self) -> None:
        self.graph.add_group(self.title, self.bounds, self.color, id=self.gid)

    def undo(self) -> None:
        self.graph.remove_group(self.gid)


class RemoveGroupCommand(QUndoCommand):
    def __init__(self, graph: Graph, gid: str) -> None:
        super().__init__("Delete group")
        self.graph, self.gid = graph, gid
        self._group = None

    def redo(self) -> None:
        self._group = self.graph.remove_group(self.gid)

    def undo(self) -> None:
        g = self._group
        assert g is not None
        self.graph.add_group(g.title, g.bounds, g.color, id=g.id, extra=g.extra)


class UpdateGroupCommand(QUndoCommand):
    def __init__(self, graph: Graph, gid: str, **changes: Any) -> None:
        super().__init__("Edit group")
        self.graph, self.gid = graph, gid
        g = graph.groups[gid]
        self.old = {k: getattr(g, k) for k in changes}
        self.new = changes

    def redo(self) -> None:
        self.graph.update_group(self.gid, **self.new)

    def undo(self) -> None:
        self.graph.update_group(self.gid, **self.old)


class AddFragmentCommand(QUndoCommand):
    """Insert a piece of workflow (paste, duplicate, drop a file): nodes with fresh
    ids, the links between them, and their groups, offset by ``offset``.
    ``new_ids`` maps fragment ids to the ids used in the graph."""

    def __init__(self, graph: Graph, doc: dict[str, Any], offset: tuple[float, float] = (0.0, 0.0),
                 text: str = "Paste") -> None:
        super().__init__(text)
        self.graph = graph
        self.new_ids: dict[str, str] = {}
        self._nodes: list[Node] = []
        taken = set(graph.nodes)
        for old_id, nd in doc.get("nodes", {}).items():
            nid = graph.new_id()
            while nid in taken:
                nid = graph.new_id()
            taken.add(nid)
            self.new_ids[old_id] = nid
            ui = copy.deepcopy(nd.get("ui", {}))
            pos = ui.get("pos", [0, 0])
            ui["pos"] = [float(pos[0]) + offset[0], float(pos[1]) + offset[1]]
            extra = {k: v for k, v in nd.items() if k not in ("type", "values", "mode", "title", "ui")}
            self._nodes.append(Node(nid, nd["type"], copy.deepcopy(nd.get("values", {})),
                                    nd.get("mode", "normal"), nd.get("title"), ui, extra))
        # Keep the graph's id counter past the ids we reserved without adding anything yet.
        self._links = []
        for lk in doc.get("links", []):
            (src, out), (dst, inp) = lk["from"], lk["to"]
            if str(src) in self.new_ids and str(dst) in self.new_ids:
                self._links.append((self.new_ids[str(src)], str(out), self.new_ids[str(dst)], str(inp)))
        self._groups = []
        for gr in doc.get("groups", []):
            x, y, w, h = gr.get("bounds", [0, 0, 400, 300])
            self._groups.append((f"g{graph.new_id()}", gr.get("title", "Group"),
                                 (x + offset[0], y + offset[1], w, h), gr.get("color")))

    def redo(self) -> None:
        for n in self._nodes:
            self.graph.insert_node(Node(n.id, n.type, dict(n.values), n.mode, n.title, copy.deepcopy(n.ui),
                                        dict(n.extra)))
        for args in self._links:
            self.graph.connect(*args)
        for gid, title, bounds, color in self._groups:
            self.graph.add_group(title, bounds, color, id=gid)

    def undo(self) -> None:
        for gid, *_ in self._groups:
            if gid in self.graph.groups:
                self.graph.remove_group(gid)
        for n in reversed(self._nodes):
            if n.id in self.graph.nodes:
                self.graph.remove_node(n.id)
